//! `tritontube-node`: not implemented yet.

fn main() -> std::process::ExitCode {
    eprintln!("tritontube-node: not implemented yet");
    std::process::ExitCode::FAILURE
}
