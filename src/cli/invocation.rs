//! How the user started this binary, so that a command it suggests (the
//! `--dev` banner's "for a new key") can be pasted as it is: under
//! `cargo run`, another `cargo run`; otherwise the program as the user
//! named it (`threadline` when the shell found it on `PATH`,
//! `./target/release/threadline`, `/usr/local/bin/threadline`).

use std::ffi::OsStr;
use std::path::Path;

/// The command that runs this binary again the way the user started it,
/// ready for a shell (arguments follow it).
pub fn this_command() -> String {
    let argv0 = std::env::args_os().next();
    // `cargo run` (and `cargo test`) give the program the variables of the
    // package it runs; an installed binary started from a shell has none.
    let by_cargo = std::env::var_os("CARGO").is_some()
        && std::env::var_os("CARGO_PKG_NAME").is_some_and(|n| n == env!("CARGO_PKG_NAME"));
    let exe = std::env::current_exe().ok();
    command_for(argv0.as_deref(), by_cargo, exe.as_deref())
}

/// [`this_command`] from what it reads: argv[0], whether cargo started us,
/// and the running executable (under cargo, its directory names the profile).
fn command_for(argv0: Option<&OsStr>, by_cargo: bool, exe: Option<&Path>) -> String {
    if by_cargo {
        // cargo builds a profile into target/<dir>: `dev` into `debug`,
        // `release` into `release`, any other into its own name.
        let profile = exe
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .and_then(OsStr::to_str);
        return match profile {
            Some("release") => "cargo run --release --".to_owned(),
            Some("debug") | None => "cargo run --".to_owned(),
            Some(other) => format!("cargo run --profile {} --", shell_quote(other)),
        };
    }
    match argv0.and_then(OsStr::to_str).filter(|a| !a.is_empty()) {
        Some(program) => shell_quote(program),
        // No argv[0] (an exec with an empty argument list), or not UTF-8.
        None => env!("CARGO_PKG_NAME").to_owned(),
    }
}

/// `s` as one shell word: as it is when it holds nothing a POSIX shell
/// treats specially, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./+:=@%,".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(argv0: &str, by_cargo: bool, exe: &str) -> String {
        command_for(Some(OsStr::new(argv0)), by_cargo, Some(Path::new(exe)))
    }

    #[test]
    fn an_installed_binary_is_named_as_the_user_started_it() {
        assert_eq!(
            command("threadline", false, "/usr/local/bin/threadline"),
            "threadline"
        );
        assert_eq!(
            command("./threadline", false, "/home/u/threadline"),
            "./threadline"
        );
        assert_eq!(
            command(
                "/opt/my tools/threadline",
                false,
                "/opt/my tools/threadline"
            ),
            "'/opt/my tools/threadline'"
        );
        assert_eq!(command_for(None, false, None), "threadline");
    }

    #[test]
    fn under_cargo_run_the_command_is_cargo_run_with_its_profile() {
        let target = "/src/threadline/target";
        assert_eq!(
            command(
                "target/release/threadline",
                true,
                &format!("{target}/release/threadline")
            ),
            "cargo run --release --"
        );
        assert_eq!(
            command(
                "target/debug/threadline",
                true,
                &format!("{target}/debug/threadline")
            ),
            "cargo run --"
        );
        assert_eq!(
            command("x", true, &format!("{target}/profiling/threadline")),
            "cargo run --profile profiling --"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_they_need_it() {
        assert_eq!(
            shell_quote("/var/lib/threadline.db"),
            "/var/lib/threadline.db"
        );
        assert_eq!(shell_quote("my db.sqlite"), "'my db.sqlite'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote(""), "''");
    }
}
