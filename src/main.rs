//! The `threadline` binary: parse the command line, set up logging, run the
//! subcommand. A bad command line gets clap's message (what is wrong, and a
//! "did you mean") without its usage block, and exit 2; any other error is
//! one line on stderr and exit 1.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use threadline::cli;
use threadline::config::{
    AgentCommand, Cli, Command, KeyCommand, ServeConfig, ThreadCommand, WebhookCommand,
};
use threadline::startup::{self, Application};

/// jemalloc instead of glibc's allocator: with its background thread it
/// hands freed memory back to the OS (a spike of sockets does not leave the
/// process at its peak size), and it keeps idle sockets as small as glibc did.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // clap's own message: the missing arguments, the allowed values, a
    // "did you mean"; help and version go to stdout with exit 0, errors to
    // stderr with exit 2.
    let args = parse_command_line().unwrap_or_else(|e| usage_error(e));
    threadline::logging::init(args.log_format, threadline::logging::DEFAULT_FILTER);
    let result = match args.command {
        Command::Serve(config) => serve(*config),
        Command::Agent(AgentCommand::Create { name, user, db }) => {
            cli::agent_create(&db, &name, user.as_deref()).and_then(print)
        }
        Command::Key(KeyCommand::Create { user, db }) => {
            cli::key_create(&db, &user).and_then(print)
        }
        Command::Key(KeyCommand::Revoke { login_key, db }) => {
            let stdin = std::io::stdin();
            // Read from a terminal, say so: silent, it looks like a hang.
            if login_key.as_deref().is_none_or(|k| k == "-") && stdin.is_terminal() {
                eprintln!("Paste the login key to revoke and press Enter (Ctrl-D to cancel):");
            }
            cli::key_argument(login_key.as_deref(), stdin.lock())
                .and_then(|key| cli::key_revoke(&db, &key))
                .and_then(print)
        }
        Command::Agent(AgentCommand::List { user, db }) => {
            cli::agent_list(&db, user.as_deref()).and_then(print)
        }
        Command::Agent(AgentCommand::Rename { aid, name, db }) => {
            cli::agent_rename(&db, &aid, &name).and_then(print)
        }
        Command::Key(KeyCommand::List { user, db }) => cli::key_list(&db, &user).and_then(print),
        Command::Key(KeyCommand::RevokeAll { user, db }) => {
            cli::key_revoke_all(&db, &user).and_then(print)
        }
        Command::Thread(ThreadCommand::Delete { thread_id, db }) => {
            cli::thread_delete(&db, &thread_id).and_then(print)
        }
        Command::Backup(args) => cli::backup(&args.db, &args.to).and_then(print),
        Command::MarkRestored { db } => cli::mark_restored(&db).and_then(print),
        Command::Prune(args) => cli::prune(
            &args.db,
            args.idempotency_days,
            args.threads_older_than_days,
        )
        .and_then(print),
        Command::Mcp { url } => threadline::mcp::stdio::run(&url),
        Command::Healthcheck { url, timeout_secs } => {
            threadline::healthcheck::check(&url, std::time::Duration::from_secs(timeout_secs))
                .and_then(print)
        }
        Command::Webhook(WebhookCommand::Create {
            user,
            url,
            events,
            description,
            allow_private,
            db,
        }) => cli::webhook_create(
            &db,
            &user,
            &url,
            events,
            description.as_deref(),
            allow_private,
        )
        .and_then(print),
        Command::Webhook(WebhookCommand::List { user, db }) => {
            cli::webhook_list(&db, &user).and_then(print)
        }
        Command::Webhook(WebhookCommand::Delete { user, id, db }) => {
            cli::webhook_delete(&db, &user, &id).and_then(print)
        }
        Command::Webhook(WebhookCommand::Rotate {
            user,
            id,
            keep_previous_hours,
            db,
        }) => cli::webhook_rotate(&db, &user, &id, Some(keep_previous_hours)).and_then(print),
        Command::Webhook(WebhookCommand::Pause { user, id, db }) => {
            cli::webhook_pause(&db, &user, &id).and_then(print)
        }
        Command::Webhook(WebhookCommand::Resume { user, id, db }) => {
            cli::webhook_resume(&db, &user, &id).and_then(print)
        }
        Command::Webhook(WebhookCommand::Attempts {
            user,
            id,
            limit,
            db,
        }) => cli::webhook_attempts(&db, &user, &id, limit).and_then(print),
    };
    // Request lines wait in a buffer for a few milliseconds.
    threadline::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, read with every flag and argument that takes a value
/// taking a negative number as one: `--idempotency-days -1` is then a bad
/// value for `--idempotency-days` (what it is), not an unknown argument
/// `-1` (clap's reading of anything that starts with `-`). No flag is a
/// digit, so nothing else is read differently.
fn parse_command_line() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    fn negatives_are_values(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| match arg.get_action().takes_values() {
                true => arg.allow_negative_numbers(true),
                false => arg,
            })
            .mut_subcommands(negatives_are_values)
    }
    let mut command = negatives_are_values(Cli::command());
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
}

/// A bad value's reason, in words, where clap gives a number parser's own
/// ("invalid digit found in string" for `-1` or `1.5` as a count, "-1 is
/// not in 0..=36500"): what the flag takes instead.
fn value_reason(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    use std::num::IntErrorKind;
    let Some(ContextValue::String(value)) = e.get(ContextKind::InvalidValue) else {
        return None;
    };
    let source = std::error::Error::source(e)?;
    if let Some(parse) = source.downcast_ref::<std::num::ParseIntError>() {
        let negative = value.trim().starts_with('-');
        return Some(
            match parse.kind() {
                IntErrorKind::PosOverflow => "too large a number",
                IntErrorKind::InvalidDigit if negative => "must be a whole number, not negative",
                _ => "must be a whole number",
            }
            .to_owned(),
        );
    }
    if source.is::<std::num::ParseFloatError>() {
        return Some("must be a number".to_owned());
    }
    // The range parsers' "{value} is not in {min}..={max}".
    let said = source.to_string();
    let (_, range) = said.split_once(" is not in ")?;
    let (min, max) = range.split_once("..=")?;
    Some(format!("must be a whole number from {min} to {max}"))
}

/// The flags whose values are secrets, never echoed in an error.
const SECRET_FLAGS: [&str; 1] = ["--metrics-token"];

/// Ends the process on a bad command line: clap's message without the
/// blank lines, the usage block and the tip to pass a flag as a value
/// (no command takes a value that starts with `-` but a number), then where
/// to read more: `threadline serve --nope` says what is wrong in one line,
/// and `try 'threadline serve --help'`. Help, version, and a command
/// without its subcommand (which shows the commands) are clap's as they are.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // The (sub)command the user ran, from the words of the command line
    // that name one: clap's error does not always carry it (an invalid
    // value does not).
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut path = vec![command.get_name().to_owned()];
    for arg in std::env::args_os().skip(1) {
        if let Some(sub) = arg.to_str().and_then(|a| command.find_subcommand(a)) {
            path.push(sub.get_name().to_owned());
            command = sub.clone();
        }
    }
    let command = path.join(" ");
    let mut out = String::new();
    // A bad value: which flag, what was given, what it takes; the flag
    // without its placeholder (`--idempotency-days`, not `... <DAYS>`).
    let reason = (e.kind() == ErrorKind::ValueValidation)
        .then(|| value_reason(&e).or_else(|| std::error::Error::source(&e).map(|s| s.to_string())))
        .flatten();
    let arg = e.get(clap::error::ContextKind::InvalidArg);
    let value = e.get(clap::error::ContextKind::InvalidValue);
    if let (Some(reason), Some(arg), Some(value)) = (reason, arg, value) {
        let arg = arg.to_string();
        let flag = match arg.split_once(' ') {
            Some((flag, _)) if flag.starts_with('-') => flag,
            _ => &arg,
        };
        // A secret is not repeated: stderr ends up in the journal, and a
        // value one character short is most of the real one.
        let line = match SECRET_FLAGS.contains(&flag) {
            true => format!("error: invalid value for '{flag}': {reason}\n"),
            false => format!("error: invalid value '{value}' for '{flag}': {reason}\n"),
        };
        out.push_str(&line);
    }
    let rendered = match out.is_empty() {
        true => e.render().to_string(),
        false => String::new(),
    };
    for line in rendered.lines() {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.trim().is_empty() || line.trim_start().starts_with("tip: to pass '") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("For more information, try '{command} --help'.\n"));
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
    std::process::exit(2);
}

/// Prints a command's output on its own line. A reader that went away
/// (`threadline agent list | head -c 100`) ends the output quietly, as
/// other command-line tools do, instead of panicking as `println!` would.
fn print(out: impl std::fmt::Display) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{out}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the output: {e}"))
        }
        _ => Ok(()),
    }
}

fn serve(config: ServeConfig) -> Result<(), String> {
    config.validate()?;
    cli::check_db_path(&config.db)?;
    // Before anything starts: a second server on the file stops here.
    let lock = cli::lock_for_serving(&config.db)?;
    // A node may start before its PostgreSQL does (a host's boot, a compose
    // file): it waits for it rather than exiting at once (systemd's
    // Restart= gave up after five quick failures, in 10 s).
    if let Some(url) = &config.db.database_url {
        threadline::store::pg::wait_until_reachable(
            url,
            std::time::Duration::from_secs(config.pg_start_wait_secs.into()),
        )?;
    }
    // Purge freed pages on a timer (jemalloc's dirty decay, 10 s), not only
    // when the process next allocates: an idle server shrinks too.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        log::warn!("allocator background thread not started; freed memory returns only under activity: {e}");
    }
    if let Err(e) = startup::raise_open_file_limit() {
        log::warn!("could not raise the open-file limit: {e}");
    }
    actix_web::rt::System::new().block_on(async move {
        // Bind first: a port in use fails before the dev seed prints a key
        // that is never shown again, and the curl line names the bound port.
        let app = Application::build(config.clone()).await?;
        lock.started();
        announce(&config, app.base_url())?;
        log::info!("threadline listening on {}", app.base_url());
        let handle = app.shutdown_handle();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            log::info!("shutting down: closing sockets, finishing requests");
            handle.shutdown().await;
        });
        app.run_until_stopped()
            .await
            .map_err(|e| format!("server failed: {e}"))?;
        log::info!("stopped cleanly");
        Ok(())
    })
}

/// Prints the dev seed, or how to create a first agent. `base_url` is the
/// bound address (`http://127.0.0.1:PORT`).
fn announce(config: &ServeConfig, base_url: &str) -> Result<(), String> {
    let db = &config.db;
    // Never the URL itself: it may carry a password.
    let (shown, flag) = match &db.database_url {
        Some(_) => (
            "the PostgreSQL database".to_owned(),
            "--database-url URL".to_owned(),
        ),
        None => (
            db.path.display().to_string(),
            format!("--db {}", cli::shell_quote(&db.path.display().to_string())),
        ),
    };
    // The suggested commands start the way the user started us: pasted
    // into the same shell, they run.
    let threadline = cli::this_command();
    if config.dev {
        match cli::dev_seed(db)? {
            Some(seed) => {
                let base = config
                    .public_url
                    .clone()
                    .unwrap_or_else(|| base_url.to_owned());
                let base = base.trim_end_matches('/');
                println!("threadline dev mode: seeded {shown} with one account and two agents");
                println!("  user_id    {}", seed.user_id);
                println!(
                    "  login key  {}   (shown once; only its hash is stored)",
                    seed.login_key
                );
                println!("  alice      {}", seed.alice);
                println!("  bob        {}", seed.bob);
                println!("  inspector  {base}/   (sign in there with the login key)");
                println!("Try:");
                println!(
                    "  curl -s {base}/api/acsp/thread/create -H 'Authorization: Bearer {}' \
                     -H 'Content-Type: application/json' \
                     -d '{{\"aid\":\"{}\",\"target_aid\":\"{}\",\"subject\":\"hello\",\"first_message\":\"Hi Bob!\"}}'",
                    seed.login_key, seed.alice, seed.bob
                );
            }
            None => {
                // The key is not stored (only its hash), so it cannot be shown
                // again; the account and its agents can.
                let (user, agents) = match cli::first_account(db)? {
                    Some(first) => (first.user_id, first.agents),
                    None => ("usr_...".into(), Vec::new()),
                };
                println!(
                    "threadline dev mode: {shown} already has accounts (keys are shown only once)"
                );
                println!("  user_id    {user}");
                for (aid, name) in agents {
                    println!("  {name:<10} {aid}");
                }
                println!("For a new key: {threadline} key create --user {user} {flag}");
            }
        }
    } else if cli::is_empty(db)? {
        log::info!(
            "the database has no agents yet; create one with: {threadline} agent create --name NAME {flag}"
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
