//! `nicplug-dra`: the `nicplug` command line with the DRA driver in it. `nicplug dra ...`
//! execs this binary (see `RUNS_DRA` in `src/main.rs`), so the device plugin's binary carries
//! no API-server client; everything else behaves as in `nicplug`.

#[path = "../main.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
