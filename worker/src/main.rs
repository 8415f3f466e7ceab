//! `worker`: see the crate docs of the `worker` library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    worker::main_entry().await
}
