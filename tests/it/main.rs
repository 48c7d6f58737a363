#[path = "../support/model_server.rs"]
pub mod model_server;

mod codex;
