//! The production producer's entry point, built in the test package for process-level tests.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    producer::main_entry().await
}
