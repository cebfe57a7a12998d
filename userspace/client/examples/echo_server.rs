//! The test echo server as a program, to try `chat_client` against: every message comes
//! back on the channel it arrived on. Runs until killed or a socket error stops it.
//!
//! ```text
//! cargo run -p xrudp-client --example echo_server -- 127.0.0.1:7777
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use xrudp_client::testing::EchoServer;
use xrudp_proto::ServerConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7777".to_owned())
        .parse()?;
    let server = EchoServer::bind(addr, ServerConfig::default())?;
    eprintln!("echoing on {}", server.addr());
    let mut last = server.stats();
    while server.is_running() {
        std::thread::sleep(Duration::from_secs(1));
        let now = server.stats();
        if now.connected != last.connected || now.messages != last.messages {
            eprintln!(
                "connected {} · disconnected {} · messages {}",
                now.connected,
                now.disconnects.len(),
                now.messages
            );
        }
        last = now;
    }
    server.stop()?;
    Ok(())
}
