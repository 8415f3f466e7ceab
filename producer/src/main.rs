//! `producer`: see the crate docs of the `producer` library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    producer::main_entry().await
}
