//! The production worker's entry point, built in the test package for process-level tests.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    worker::main_entry().await
}
