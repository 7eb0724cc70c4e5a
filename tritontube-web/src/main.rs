//! `tritontube-web`: not implemented yet.

fn main() -> std::process::ExitCode {
    eprintln!("tritontube-web: not implemented yet");
    std::process::ExitCode::FAILURE
}
