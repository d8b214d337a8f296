//! The documentation against the binary: a test that fails when they part
//! ways. An operator reads the README, docs/operations.md, docs/deploy.md
//! and the files in deploy/, and copies from them; every flag, variable,
//! command line and metric name they give must be one the binary has, and
//! every flag and variable the binary has must be in them.
//!
//! The binary's side is read from clap's own description of the command
//! line (`Cli::command()`), from a spawned server's `/metrics`, and from
//! the real binary started as the systemd unit and the container image
//! start it. The docs' own references are checked too: their relative
//! links, and the files and tests they cite.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use clap::CommandFactory;
use threadline::config::Cli;
use tokio::time::Instant;

use crate::helpers::process::{listening_port, output_within, BIN, DEADLINE};
use crate::helpers::{spawn_app_with, POLL};

/// What an operator reads.
const OPERATOR_DOCS: [&str; 3] = ["README.md", "docs/operations.md", "docs/deploy.md"];
/// What an operator installs or runs as it is.
const DEPLOY_FILES: [&str; 7] = [
    "deploy/threadline.service",
    "deploy/Dockerfile",
    "deploy/Caddyfile",
    "deploy/nginx.conf",
    "deploy/check-proxies.sh",
    "deploy/multinode/run.sh",
    "deploy/multinode/nginx.conf",
];

/// Flags the docs give to other programs (cargo, curl, systemd, docker,
/// the package and user tools, certbot, PostgreSQL's tools, MCP clients).
/// A flag of threadline or of one of its examples is checked against the
/// program itself, not listed here.
const OTHER_PROGRAMS_FLAGS: &[&str] = &[
    // cargo
    "release",
    "bins",
    "bin",
    "examples",
    "example",
    "locked",
    "test",
    // curl, rustup's installer
    "proto",
    "tlsv1",
    "header",
    // systemd, journalctl
    "now",
    "no-pager",
    // useradd, adduser, createuser
    "system",
    "home-dir",
    "shell",
    "uid",
    "no-create-home",
    "pwprompt",
    // docker (build, run, HEALTHCHECK, RUN --mount), objcopy
    "name",
    "restart",
    "ulimit",
    "mount",
    "from",
    "interval",
    "timeout",
    "start-period",
    "retries",
    "strip-debug",
    // certbot, caddy, claude's MCP command
    "standalone",
    "pre-hook",
    "post-hook",
    "config",
    "transport",
    // check-proxies.sh
    "adapter",
    // pg_restore
    "dbname",
    "no-owner",
    "role",
];

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// One flag of the binary: the command it belongs to (`serve`, `agent
/// create`, or empty for the global ones), its long name and variable.
#[derive(Debug, Clone)]
struct Flag {
    command: String,
    long: String,
    env: Option<String>,
    default: Option<String>,
    takes_value: bool,
}

/// Every long flag of every (sub)command, read from clap.
fn binary_flags() -> Vec<Flag> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<Flag>) {
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            out.push(Flag {
                command: path.to_owned(),
                long: long.to_owned(),
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                default: (!arg.get_default_values().is_empty()).then(|| {
                    arg.get_default_values()
                        .iter()
                        .map(|v| v.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(",")
                }),
                takes_value: arg.get_action().takes_values(),
            });
        }
        for sub in cmd.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            walk(sub, path.trim(), out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), "", &mut out);
    out
}

/// The flags of the command `words` names (`["agent", "create"]`), with
/// the global ones.
fn flags_of(flags: &[Flag], words: &[&str]) -> BTreeSet<String> {
    let command = words.join(" ");
    flags
        .iter()
        .filter(|f| f.command == command || f.command.is_empty())
        .map(|f| f.long.clone())
        .collect()
}

/// The `--flags` named in `text`: `--` at the start of a word, then
/// lower-case letters, digits and dashes.
fn flags_named(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        i = start + 2;
        let before = start.checked_sub(1).map(|b| bytes[b]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let name = name.trim_end_matches('-');
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.push(name.to_owned());
        }
        i += name.len();
    }
    out
}

/// The words `THREADLINE_…` in `text`.
fn variables_named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("THREADLINE_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        // `THREADLINE_*`, `THREADLINE_…`: the prefix, not a variable.
        let name = name.trim_end_matches('_');
        if name.len() > "THREADLINE".len() {
            out.insert(name.to_owned());
        }
    }
    out
}

/// The long flags the examples take (clap fields with `long`, and the
/// `"--flag"` literals of the ones that read their arguments by hand).
fn example_flags() -> BTreeSet<String> {
    let mut files = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(std::fs::read_to_string(&path).expect("example source"));
            }
        }
    }
    let mut out = BTreeSet::new();
    for source in files {
        out.extend(
            flags_named(&source)
                .into_iter()
                .filter(|f| source.contains(&format!("\"--{f}"))),
        );
        let mut pending_long = false;
        for line in source.lines().map(str::trim) {
            if line.starts_with("#[arg(") {
                if let Some(named) = line.split("long = \"").nth(1) {
                    out.insert(named.split('"').next().expect("name").to_owned());
                } else if line.contains("long") {
                    pending_long = true;
                }
            } else if pending_long
                && !line.starts_with("///")
                && !line.starts_with("#[")
                && line.contains(':')
            {
                let field = line
                    .trim_start_matches("pub ")
                    .split(':')
                    .next()
                    .expect("field");
                out.insert(field.trim().replace('_', "-"));
                pending_long = false;
            }
        }
    }
    out
}

/// The lines of the fenced code blocks of a Markdown text, with the
/// continuation lines (ending in `\`) joined.
fn code_lines(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut joined = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            joined.push_str(head);
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        out.push(std::mem::take(&mut joined));
    }
    out
}

/// A shell line cut into words the way a shell would for these docs:
/// quotes group, `$(…)` stays one word, a `#` word starts a comment, and
/// redirections, `&`, pipes and `&&` end the command.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut depth = 0;
    let mut chars = line.chars().peekable();
    let mut has_word = false;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') if depth == 0 => {
                quote = Some(c);
                has_word = true;
            }
            (None, '(') if word.ends_with('$') || depth > 0 => {
                depth += 1;
                word.push(c);
            }
            (None, ')') if depth > 0 => {
                depth -= 1;
                word.push(c);
            }
            (None, c) if c.is_whitespace() && depth == 0 => {
                if has_word || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            (None, '#') if depth == 0 && word.is_empty() && !has_word => break,
            (None, '&' | '|' | '<' | '>' | ';') if depth == 0 && word.is_empty() && !has_word => {
                break
            }
            (None, '2') if depth == 0 && word.is_empty() && chars.peek() == Some(&'>') => break,
            (None, c) => word.push(c),
        }
    }
    if has_word || !word.is_empty() {
        words.push(word);
    }
    words
}

/// The threadline command a shell line runs, as its words after the
/// program's name: `threadline …`, `./target/release/threadline …`, or
/// either behind `sudo -u threadline` or `docker exec threadline`.
fn threadline_command(line: &str) -> Option<Vec<String>> {
    let line = line.trim().trim_start_matches("$ ");
    let words = shell_words(line);
    let mut words = words.as_slice();
    loop {
        match words {
            [sudo, u, _user, rest @ ..] if sudo == "sudo" && u == "-u" => words = rest,
            [docker, exec, _name, rest @ ..] if docker == "docker" && exec == "exec" => {
                words = rest
            }
            _ => break,
        }
    }
    let (program, rest) = words.split_first()?;
    let name = program.rsplit('/').next()?;
    (name == "threadline"
        && !program.contains('=')
        && (program == "threadline" || program.contains('/'))
        && !rest.is_empty())
    .then(|| rest.to_vec())
}

/// `cmd` with no flag reading a variable, in every subcommand.
fn without_variables(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| a.env(None::<&str>))
        .mut_subcommands(without_variables)
}

/// The subcommand path at the start of `words` (`["key", "revoke"]`).
fn command_path(words: &[String]) -> Vec<&str> {
    let mut cmd = Cli::command();
    let mut path = Vec::new();
    for word in words {
        match cmd.find_subcommand(word) {
            Some(sub) => {
                path.push(word.as_str());
                cmd = sub.clone();
            }
            None => break,
        }
    }
    path
}

#[test]
fn every_flag_and_variable_of_the_binary_is_in_the_docs() {
    let readme = repo_file("README.md");
    let operations = repo_file("docs/operations.md");
    let both = format!("{readme}\n{operations}");
    let named: BTreeSet<String> = flags_named(&both).into_iter().collect();
    let mut missing = Vec::new();
    for flag in binary_flags() {
        if !named.contains(&flag.long) {
            missing.push(format!(
                "`{} --{}` is in neither README.md nor docs/operations.md",
                flag.command, flag.long
            ));
        }
        if let Some(env) = &flag.env {
            if !readme.contains(env.as_str()) {
                missing.push(format!("{env} (`--{}`) is not in README.md", flag.long));
            }
        }
    }
    // Every command, in the README's synopsis (`threadline key revoke-all`).
    fn leaves(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        if cmd.get_subcommands().next().is_none() {
            out.push(path.to_owned());
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            leaves(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut commands = Vec::new();
    leaves(&Cli::command(), "threadline", &mut commands);
    for command in commands {
        if !readme.contains(&format!("{command} ")) {
            missing.push(format!("README.md never shows `{command}`"));
        }
    }
    // serve's flags table: one row per flag, with its variable and default.
    let rows: BTreeMap<String, Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| {
            let cells: Vec<String> = l
                .split(" | ")
                .map(|c| c.trim_matches(['|', ' ']).to_owned())
                .collect();
            (
                cells[0]
                    .trim_matches('`')
                    .trim_start_matches("--")
                    .to_owned(),
                cells,
            )
        })
        .collect();
    for flag in binary_flags()
        .iter()
        .filter(|f| f.command == "serve" || f.command.is_empty())
    {
        let Some(row) = rows.get(&flag.long) else {
            missing.push(format!(
                "serve's flag table in README.md has no row for `--{}`",
                flag.long
            ));
            continue;
        };
        let env = row.get(1).map(|c| c.trim_matches('`')).unwrap_or("");
        if Some(env) != flag.env.as_deref() {
            missing.push(format!(
                "README's row for `--{}` names {env:?}, the binary reads {:?}",
                flag.long, flag.env
            ));
        }
        let documented = row.get(2).map(|c| c.trim_matches('`')).unwrap_or("");
        match (&flag.default, flag.takes_value) {
            (Some(default), true) => {
                let same = documented == default
                    || documented.parse::<f64>().ok() == default.parse::<f64>().ok()
                        && documented.parse::<f64>().is_ok();
                if !same {
                    missing.push(format!(
                        "README says `--{}` defaults to {documented:?}, the binary to {default:?}",
                        flag.long
                    ));
                }
            }
            // A switch: off unless given.
            (_, false) if !documented.starts_with("off") => {
                missing.push(format!(
                    "README says switch `--{}` defaults to {documented:?}, the binary to off",
                    flag.long
                ));
            }
            _ => {}
        }
    }
    assert!(missing.is_empty(), "the docs lack:\n{}", missing.join("\n"));
}

#[test]
fn every_flag_the_docs_name_is_one_a_program_takes() {
    let mut threadline: BTreeSet<String> = binary_flags().into_iter().map(|f| f.long).collect();
    threadline.extend(["help".to_owned(), "version".to_owned()]);
    let examples = example_flags();
    let mut unknown = Vec::new();
    for path in OPERATOR_DOCS.iter().chain(DEPLOY_FILES.iter()) {
        for flag in flags_named(&repo_file(path)) {
            if !threadline.contains(&flag)
                && !examples.contains(&flag)
                && !OTHER_PROGRAMS_FLAGS.contains(&flag.as_str())
            {
                unknown.push(format!("{path}: --{flag}"));
            }
        }
    }
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "flags no program here takes (typo? renamed?):\n{}",
        unknown.join("\n")
    );
}

#[test]
fn every_threadline_command_line_in_the_docs_parses() {
    let flags = binary_flags();
    let mut lines = Vec::new();
    for path in OPERATOR_DOCS {
        lines.extend(code_lines(&repo_file(path)).into_iter().map(|l| (path, l)));
    }
    let unit = repo_file("deploy/threadline.service");
    for line in unit.lines() {
        if let Some(exec) = line.strip_prefix("ExecStart=") {
            lines.push(("deploy/threadline.service", exec.to_owned()));
        }
        // The install steps in its comments.
        if let Some(comment) = line.strip_prefix("#   ") {
            lines.push(("deploy/threadline.service", comment.to_owned()));
        }
    }
    let dockerfile = repo_file("deploy/Dockerfile");
    for line in dockerfile.lines() {
        // The image's CMDs (ENTRYPOINT is `threadline`), and the docker
        // commands in its comments.
        if let Some(exec) = line.split("CMD [").nth(1) {
            let words: Vec<&str> = exec
                .trim_end_matches(']')
                .split(", ")
                .map(|w| w.trim_matches('"'))
                .collect();
            let words = if words.first() == Some(&"threadline") {
                words
            } else {
                [&["threadline"][..], &words].concat()
            };
            lines.push(("deploy/Dockerfile", words.join(" ")));
        }
        if let Some(comment) = line.strip_prefix("#   docker ") {
            lines.push(("deploy/Dockerfile", format!("docker {comment}")));
        }
    }
    let mut seen = 0;
    let mut wrong = Vec::new();
    for (path, line) in &lines {
        let Some(words) = threadline_command(line) else {
            continue;
        };
        // What the server prints (`threadline dev mode: seeded …`), not a command.
        if command_path(&words).is_empty() && words.iter().take(2).any(|w| w.ends_with(':')) {
            continue;
        }
        seen += 1;
        let synopsis = line.contains('[')
            || words
                .iter()
                .any(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_') && w.len() > 1);
        if synopsis {
            // A usage line (`[--user USER_ID]`): each flag must be one of
            // that command's.
            let path_words = command_path(&words);
            let known = flags_of(&flags, &path_words);
            for flag in flags_named(line) {
                if !known.contains(&flag) && !matches!(flag.as_str(), "help" | "version") {
                    wrong.push(format!(
                        "{path}: `{line}`: `threadline {}` has no --{flag}",
                        path_words.join(" ")
                    ));
                }
            }
            continue;
        }
        let argv = std::iter::once("threadline".to_owned()).chain(words.iter().cloned());
        // Variables of this process must not fill in what the line lacks.
        match without_variables(Cli::command()).try_get_matches_from(argv) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) => {}
            Err(e) => wrong.push(format!("{path}: `{line}`:\n{}", e.render())),
        }
    }
    assert!(seen >= 20, "found only {seen} threadline command lines");
    assert!(
        wrong.is_empty(),
        "command lines the binary refuses:\n{}",
        wrong.join("\n")
    );
}

/// Every `THREADLINE_*` variable the docs name is read by something here:
/// the binary (a flag's variable), an example or test (a literal), or a
/// script. The ones the unit and the image set are the server's own.
#[test]
fn every_variable_the_docs_name_is_read_by_the_code() {
    let server: BTreeSet<String> = binary_flags().into_iter().filter_map(|f| f.env).collect();
    let mut read = server.clone();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![
        root.join("src"),
        root.join("examples"),
        root.join("tests"),
        root.join(".ci"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // This file names variables; it reads none.
            if path.ends_with("docs17.rs") || path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for name in variables_named(&text) {
                let literal = format!("\"{name}\"");
                let shell = [format!("${name}"), format!("${{{name}")];
                if text.contains(&literal) || shell.iter().any(|s| text.contains(s.as_str())) {
                    read.insert(name);
                }
            }
        }
    }
    let run_sh = repo_file("deploy/multinode/run.sh");
    for name in variables_named(&run_sh) {
        if run_sh.contains(&format!("${{{name}")) {
            read.insert(name);
        }
    }
    let mut unread = Vec::new();
    for path in OPERATOR_DOCS.iter().chain(DEPLOY_FILES.iter()) {
        for name in variables_named(&repo_file(path)) {
            if !read.contains(&name) {
                unread.push(format!("{path}: {name}"));
            }
        }
    }
    // What the unit and the image set must be the server's.
    for (path, marker) in [
        ("deploy/threadline.service", "Environment="),
        ("deploy/Dockerfile", "THREADLINE_"),
        ("docs/deploy.md", "Environment="),
    ] {
        for line in repo_file(path)
            .lines()
            .filter(|l| l.contains(marker) && !l.trim_start().starts_with('#'))
        {
            for name in variables_named(line) {
                if !server.contains(&name) {
                    unread.push(format!("{path} sets {name}, which serve does not read"));
                }
            }
        }
    }
    assert!(
        unread.is_empty(),
        "variables nothing reads:\n{}",
        unread.join("\n")
    );
}

/// Metric names in `text`: `threadline_` and lower-case words.
fn metrics_named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("threadline_") {
        let before = rest[..at].chars().next_back();
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '.') {
            continue;
        }
        out.insert(name.trim_end_matches('_').to_owned());
    }
    out
}

#[tokio::test]
async fn every_metric_the_docs_name_is_exported_and_every_exported_one_is_documented() {
    // A family with labels shows once it has a sample: a request, and a
    // refusal by a quota (the second bad key from this address).
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 1).await;
    for _ in 0..2 {
        let _ = app.get("/api/acsp/me", "nk_not-a-key").await;
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    // Family names (`# TYPE name kind`) and the names a query uses: a
    // counter's `_total`, a histogram's family name.
    let mut exported = BTreeSet::new();
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().expect("name"), it.next().expect("kind"));
            let queried = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            exported.insert(queried.clone());
            families.insert(queried, kind.to_owned());
        }
    }
    assert!(exported.len() >= 10, "{text}");
    let mut docs = String::new();
    for path in OPERATOR_DOCS {
        docs.push_str(&repo_file(path));
    }
    let named = metrics_named(&docs);
    let mut wrong = Vec::new();
    for name in &named {
        let base = ["_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| families.get(*b).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        if !exported.contains(base) {
            wrong.push(format!("the docs name {name}, /metrics has no such metric"));
        }
    }
    // The operator's table of what to watch (docs/deploy.md) names them all.
    let deploy = metrics_named(&repo_file("docs/deploy.md"));
    for name in &exported {
        if !deploy.contains(name) {
            wrong.push(format!(
                "/metrics exports {name}, docs/deploy.md's table does not name it"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n\n{text}", wrong.join("\n"));
}

/// `KEY=value` lines of the systemd unit's `Environment=`.
fn unit_environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|kv| {
            let (k, v) = kv.trim_matches('"').split_once('=').expect("KEY=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The image's `ENV` settings (one `ENV` with `\`-continued `KEY=value`s).
fn image_environment(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_env = false;
    for line in dockerfile.lines() {
        let line = line.trim();
        let rest = match line.strip_prefix("ENV ") {
            Some(rest) => rest,
            None if in_env => line,
            None => continue,
        };
        let more = rest.ends_with('\\');
        for kv in rest.trim_end_matches('\\').split_whitespace() {
            let (k, v) = kv.split_once('=').expect("KEY=value");
            out.push((k.to_owned(), v.to_owned()));
        }
        in_env = more;
    }
    out
}

/// A `threadline` child killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args` and exactly `env` among the THREADLINE_
/// and RUST_LOG variables, and waits (bounded) until it listens.
async fn start_as_written(
    args: &[String],
    env: &[(String, String)],
    dir: &Path,
) -> (Child, u16, std::path::PathBuf) {
    let stderr = dir.join("stderr");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    for (k, _) in std::env::vars() {
        if k.starts_with("THREADLINE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = Child(cmd.spawn().expect("the binary starts"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(port) = listening_port(child.0.id()) {
            return (child, port, stderr);
        }
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            panic!(
                "exited ({status}): {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not listening: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The unit's command line and variables start a server (only its
/// database and port moved to this test's), whose log lines are JSON; its
/// `RUST_LOG` is the server's own default, as its comment says, and the
/// paths it names agree with each other.
#[tokio::test]
async fn the_systemd_unit_starts_the_server_as_written() {
    let unit = repo_file("deploy/threadline.service");
    let env = unit_environment(&unit);
    let value = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let default_filter = threadline::logging::DEFAULT_FILTER;
    assert_eq!(
        value("RUST_LOG").as_deref(),
        Some(default_filter),
        "the unit's RUST_LOG"
    );
    assert!(
        repo_file("README.md").contains(default_filter),
        "README's default filter"
    );
    assert!(
        repo_file("docs/deploy.md").contains(default_filter),
        "deploy.md's default filter"
    );
    // Its database is in its state directory, which is its working
    // directory and the one path it may write.
    let field = |k: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in the unit"))
            .to_owned()
    };
    let state = format!("/var/lib/{}", field("StateDirectory"));
    assert_eq!(field("WorkingDirectory"), state);
    assert_eq!(field("ReadWritePaths"), state);
    let db = value("THREADLINE_DB").expect("THREADLINE_DB");
    assert_eq!(Path::new(&db).parent(), Some(Path::new(&state)), "{db}");
    assert!(unit.contains("\nUser=threadline\n"));
    assert!(repo_file("docs/deploy.md").contains(&format!("--home-dir {state} ")));

    let exec: Vec<String> = field("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/threadline");
    let dir = tempfile::tempdir().expect("temp dir");
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "THREADLINE_DB" => (k, dir.path().join("threadline.db").display().to_string()),
            "THREADLINE_BIND" => {
                assert_eq!(v, "127.0.0.1:8080", "the unit listens on loopback");
                (k, "127.0.0.1:0".to_owned())
            }
            _ => (k, v),
        })
        .collect();
    let (_child, port, stderr) = start_as_written(&exec[1..], &env, dir.path()).await;
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("client");
    let res = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);
    let log = std::fs::read_to_string(&stderr).expect("log");
    assert!(!log.is_empty());
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["message"].is_string(), "{line}");
    }
}

/// The image's variables and `CMD` start a server, and its `HEALTHCHECK`
/// command passes against it.
#[tokio::test]
async fn the_container_image_starts_the_server_and_its_healthcheck_passes() {
    let dockerfile = repo_file("deploy/Dockerfile");
    let env = image_environment(&dockerfile);
    let exec_form = |prefix: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the Dockerfile"));
        let list = line
            .split('[')
            .nth(1)
            .expect("exec form")
            .trim_end()
            .trim_end_matches(']');
        list.split(", ")
            .map(|w| w.trim_matches('"').to_owned())
            .collect()
    };
    assert_eq!(exec_form("ENTRYPOINT"), ["threadline"]);
    let cmd = exec_form("CMD [");
    let dir = tempfile::tempdir().expect("temp dir");
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "THREADLINE_DB" => {
                assert!(
                    v.starts_with("/data/"),
                    "the database is on the volume: {v}"
                );
                (k, dir.path().join("threadline.db").display().to_string())
            }
            "THREADLINE_BIND" => {
                assert_eq!(
                    v, "0.0.0.0:8080",
                    "the image listens on every address, port 8080"
                );
                (k, "127.0.0.1:0".to_owned())
            }
            _ => (k, v),
        })
        .collect();
    assert!(dockerfile.contains("EXPOSE 8080"));
    let (_child, port, _) = start_as_written(&cmd, &env, dir.path()).await;
    let health: Vec<String> = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("CMD [\"threadline\", "))
        .expect("HEALTHCHECK CMD")
        .trim_end_matches(']')
        .split(", ")
        .map(|w| w.trim_matches('"').replace(":8080/", &format!(":{port}/")))
        .collect();
    assert_eq!(health[0], "healthcheck", "{health:?}");
    let mut check = Command::new(BIN);
    check.args(&health);
    let out = output_within(check);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_helpers_read_shell_and_markdown_as_a_user_would() {
    assert_eq!(
        shell_words("threadline backup --db x --to /b/t-$(date +%F %H).db   # note"),
        [
            "threadline",
            "backup",
            "--db",
            "x",
            "--to",
            "/b/t-$(date +%F %H).db"
        ]
    );
    assert_eq!(
        shell_words("threadline key revoke < key.txt"),
        ["threadline", "key", "revoke"]
    );
    assert_eq!(
        threadline_command("sudo -u threadline threadline agent create --name 'a b' &"),
        Some(vec![
            "agent".into(),
            "create".into(),
            "--name".into(),
            "a b".into()
        ])
    );
    assert_eq!(
        threadline_command("threadline speaks MCP"),
        Some(vec!["speaks".into(), "MCP".into()])
    );
    assert_eq!(
        variables_named("THREADLINE_* THREADLINE_DB_X."),
        BTreeSet::from(["THREADLINE_DB_X".to_owned()])
    );
    assert_eq!(threadline_command("curl -s x"), None);
    assert_eq!(flags_named("a --db-x, `--to` x--y ---z --"), ["db-x", "to"]);
    assert_eq!(
        metrics_named("`threadline_ws_x_total{a}` /threadline_no"),
        BTreeSet::from(["threadline_ws_x_total".to_owned()])
    );
}

/// A heading's anchor as GitHub makes it: lower case, punctuation other
/// than `-` and `_` dropped, spaces to `-`.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block && line.starts_with('#') {
            out.insert(anchor_of(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every relative link of the README and docs/ leads to a file that
/// exists, and to a heading it has.
#[test]
fn every_link_between_the_docs_leads_somewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("name");
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = repo_file(file);
        let dir = Path::new(file).parent().expect("dir");
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path).to_string_lossy().into_owned()
            };
            let full = root.join(&linked);
            if !full.exists() {
                broken.push(format!("{file}: ({target}): no {linked}"));
                continue;
            }
            if !anchor.is_empty() && !anchors(&repo_file(&linked)).contains(anchor) {
                broken.push(format!(
                    "{file}: ({target}): no heading #{anchor} in {linked}"
                ));
            }
        }
    }
    assert!(checked >= 20, "only {checked} links");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The source files (`src/…`, `tests/…`, `deploy/…`) and the tests
/// (`operations::a_backup_taken_…`) the docs point a reader to exist.
#[test]
fn every_file_and_test_the_docs_cite_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = String::new();
    let mut dirs = vec![root.join("src"), root.join("tests"), root.join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("docs17.rs") {
                sources.push_str(&std::fs::read_to_string(&path).expect("source"));
            }
        }
    }
    let mut missing = Vec::new();
    let (mut files, mut tests) = (0, 0);
    for doc in [
        "README.md",
        "docs/operations.md",
        "docs/deploy.md",
        "docs/architecture.md",
    ] {
        let text = repo_file(doc);
        for span in text.split('`').skip(1).step_by(2) {
            let span = span.trim();
            let top = span.split('/').next().unwrap_or("");
            if span.contains('/')
                && [
                    "src",
                    "tests",
                    "examples",
                    "deploy",
                    "migrations",
                    "vendor",
                    ".ci",
                ]
                .contains(&top)
                && !span.contains(char::is_whitespace)
                && !span.contains(|c: char| c.is_ascii_uppercase() || c == '*' || c == '{')
            {
                files += 1;
                if !root.join(span.trim_end_matches('/')).exists() {
                    missing.push(format!("{doc}: no file {span}"));
                }
            }
            // A test's name: snake_case of five words or more.
            let name = span.rsplit("::").next().unwrap_or(span);
            if name.matches('_').count() >= 4
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !name.starts_with("threadline_")
            {
                tests += 1;
                if !sources.contains(&format!("fn {name}(")) {
                    missing.push(format!("{doc}: no test {span}"));
                }
            }
        }
    }
    assert!(
        files >= 10 && tests >= 10,
        "{files} files, {tests} tests cited"
    );
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
