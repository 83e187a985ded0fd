//! `cargo xtask <command>`: project automation (tool bootstrap, tests, benchmarks, local clusters).
mod bench;
mod cluster;
mod deps;
mod image;
mod process;
mod progress;
mod test;
mod tools;
mod up;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up::run_up(&args[1..]),
        Some("down") => up::run_down(&args[1..]),
        Some("test") => test::run_all(&args[1..]),
        Some("bench") => bench::run_bench(&args[1..]),
        Some("tools") => tools::run(&args[1..]),
        Some("cluster") => cluster::run(&args[1..]),
        Some("image") => image::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <up|down|test|bench|tools|cluster|image>");
            std::process::exit(2);
        }
    };
    // One line a person can act on, not anyhow's multi-line debug dump.
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}
