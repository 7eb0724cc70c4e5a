//! `tritontube-admin`: not implemented yet.

fn main() -> std::process::ExitCode {
    eprintln!("tritontube-admin: not implemented yet");
    std::process::ExitCode::FAILURE
}
