//! The `entitle` binary: with no command it serves the API; with one it runs that operator command
//! (`cli`) against the configured database and Stripe, and exits.

use std::process::ExitCode;

use entitle::{
    cli::{Cli, Command, CommandError, run_operator_command},
    config::Config,
    startup::{Application, StartupError},
    telemetry,
};

/// Many small, short-lived allocations per request from both runtime threads: mimalloc's per-thread
/// free lists serve them at a fraction of glibc malloc's cost (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Help exits 0; a malformed command prints why and the usage, and exits 2.
    let command = match Cli::try_parse_args(std::env::args_os()) {
        Ok(cli) => cli.into_command(),
        Err(err) => err.exit(),
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("entitle: configuration error: {err}");
            return ExitCode::FAILURE;
        }
    };
    // After the configuration, which says how lines are written; kept to the end, which flushes.
    let _logs = telemetry::init(config.log_format, std::io::stderr());
    if let Command::Operator(command) = command {
        let emulated = config.stripe.is_emulator();
        return match run_operator_command(config, command).await {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(CommandError::Findings(report)) => {
                print!("{report}");
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!("entitle: {}", error_chain(&err));
                // A refused mode already says what is wrong and what to do; the hint would mislead.
                let mode_refused = matches!(err, CommandError::Startup(StartupError::ServiceMode(_)));
                if emulated && !mode_refused {
                    eprintln!(
                        "entitle: (no STRIPE_SECRET_KEY is set: these commands talk to the emulator of the server running at BIND_ADDR; is it running?)"
                    );
                }
                ExitCode::FAILURE
            }
        };
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("entitle: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("entitle: server error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// An operator wants the whole story: each cause once, outermost first.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
