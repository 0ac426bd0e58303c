//! Guest workload of a vmnap lab: see [`vmnap_lab::workload`].

fn main() -> std::process::ExitCode {
    vmnap_lab::workload::main_with_args(std::env::args_os().skip(1))
}
