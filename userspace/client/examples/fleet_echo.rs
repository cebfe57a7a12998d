//! Drives N connections from one thread against an in-process echo server on loopback and
//! reports how long connecting took and the echo rate: a quick check of what one `Fleet`
//! thread sustains.
//!
//! ```text
//! cargo run --release -p xrudp-client --example fleet_echo -- [CLIENTS] [MESSAGES_EACH]
//! ```

use std::time::{Duration, Instant};

use xrudp_client::testing::EchoServer;
use xrudp_client::{ClientConfig, ClientEvent, ClientState, Fleet};
use xrudp_proto::ServerConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let clients = args.next().transpose()?.unwrap_or(1000);
    let each = args.next().transpose()?.unwrap_or(100);
    let deadline = Duration::from_mins(2);

    let server = EchoServer::start(ServerConfig {
        max_connections: clients.next_power_of_two(),
        ..ServerConfig::default()
    })?;
    let mut fleet = Fleet::new()?;
    let start = Instant::now();
    let ids = (0..clients)
        .map(|_| {
            fleet.add(
                server.addr(),
                ClientConfig::default(),
                &xrudp_client::Protection::default(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    while fleet.count(ClientState::Connected) < clients && start.elapsed() < deadline {
        fleet.drive(Duration::from_millis(10))?;
        while fleet.poll_event().is_some() {}
    }
    let connected = fleet.count(ClientState::Connected);
    let connect_time = start.elapsed();

    let payload = [0x5a; 32];
    let mut sent = vec![0; clients];
    let mut echoed = 0usize;
    let start = Instant::now();
    while echoed < connected * each && start.elapsed() < deadline {
        for (i, &id) in ids.iter().enumerate() {
            // Keep up to 8 messages outstanding per connection.
            while sent[i] < each && fleet.send(id, 0, &payload).is_ok() {
                sent[i] += 1;
                if sent[i] % 8 == 0 {
                    break;
                }
            }
        }
        fleet.drive(Duration::from_millis(1))?;
        while let Some((id, e)) = fleet.poll_event() {
            if let ClientEvent::Message { data, .. } = e {
                echoed += 1;
                fleet.recycle(id, data);
            }
        }
    }
    let echo_time = start.elapsed();
    let stats = fleet.stats();
    let server = server.stop()?;
    println!(
        "{connected}/{clients} connected in {connect_time:.2?}; {echoed} echoes of {} in \
         {echo_time:.2?} = {:.0} msg/s round trip; client datagrams out {} in {} dropped {}; \
         server echo failures {}",
        connected * each,
        f64::from(u32::try_from(echoed)?) / echo_time.as_secs_f64(),
        stats.io.datagrams_sent,
        stats.io.datagrams_received,
        stats.io.send_dropped,
        server.echo_failures,
    );
    Ok(())
}
