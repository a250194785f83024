//! `tessera-bench JOBFILE...`: see the library (`tessera_bench`) and `bench/jobs/`.

fn main() {
    std::process::exit(tessera_bench::main_with(std::env::args_os()));
}
