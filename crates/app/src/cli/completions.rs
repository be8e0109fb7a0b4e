//! `wsbridge completions SHELL`: the shell completion script (subcommands,
//! flags, their values), generated from the command line's own definition
//! with `clap_complete`, so it cannot fall behind it.

use clap::{CommandFactory, ValueEnum};

use super::Cli;

/// The shells a completion script is printed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    /// bash: `wsbridge completions bash > /etc/bash_completion.d/wsbridge`.
    Bash,
    /// zsh: `wsbridge completions zsh > "${fpath[1]}/_wsbridge"`.
    Zsh,
    /// fish: `wsbridge completions fish > ~/.config/fish/completions/wsbridge.fish`.
    Fish,
}

/// Writes the script for `shell` to stdout.
pub(crate) fn print(shell: Shell) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "wsbridge",
        &mut std::io::stdout(),
    );
}
