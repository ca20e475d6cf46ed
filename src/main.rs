//! The `reposafe` binary: parses the command line and hands over to `cli`.

fn main() {
    let code = reposafe::cli::main();
    std::process::exit(code);
}
