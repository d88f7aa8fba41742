//! The `basalt` binary: parse the command line and run one subcommand.

use anyhow::Result;
use clap::Parser;

mod commands;

fn main() {
    let cli = basalt::cli::Cli::parse();
    if let Err(e) = run(cli) {
        // A reader that went away (`basalt list | head`) is not an error.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: the errors of
/// lower modules often already print their source, so a cause whose text is
/// already in the message is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

fn run(cli: basalt::cli::Cli) -> Result<()> {
    use basalt::cli::Command;
    match cli.command {
        Command::Demo(a) => commands::demo(a),
        Command::Gen(a) => commands::generate(a),
        Command::Gt(a) => commands::ground_truth(a),
        Command::Recall(a) => commands::recall(a),
        Command::Build(a) => commands::build::run(a),
        Command::Inspect(a) => commands::build::inspect(a),
        Command::Verify(a) => commands::build::verify(a),
        Command::Search(a) => commands::search::run(a),
        Command::Plan(a) => commands::plan::run(a),
        Command::Create(a) => commands::collection::create(a),
        Command::Import(a) => commands::collection::import(a),
        Command::Insert(a) => commands::collection::insert(a),
        Command::Delete(a) => commands::collection::delete(a),
        Command::Get(a) => commands::collection::get(a),
        Command::List(a) => commands::collection::list(a),
        Command::Query(a) => commands::collection::query(a),
        Command::Index(a) => commands::collection::index(a),
        Command::Merge(a) => commands::collection::merge(a),
        Command::Stats(a) => commands::collection::stats(a),
        Command::Snapshot(a) => commands::collection::snapshot(a),
        Command::Serve(a) => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            let flags =
                basalt::server::config::Overrides { listen: a.listen, data_dir: a.data_dir };
            let cfg = basalt::server::config::ServerConfig::load(a.config.as_deref(), &env, &flags)
                .map_err(anyhow::Error::msg)?;
            basalt::server::run(cfg, a.demo)
        }
        Command::Promote(a) => commands::replication::promote(a),
        Command::Rejoin(a) => commands::replication::rejoin(a),
        Command::Config(basalt::cli::ConfigCommand::Check { file }) => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            let cfg = basalt::server::config::ServerConfig::load(
                Some(&file),
                &env,
                &basalt::server::config::Overrides::default(),
            )
            .map_err(anyhow::Error::msg)?;
            for name in basalt::server::config::unknown_env(&env) {
                eprintln!("warning: {name} names no configuration key: ignored");
            }
            eprintln!("{}: valid; the effective configuration:", file.display());
            print!("{}", cfg.to_toml_masked());
            Ok(())
        }
    }
}
