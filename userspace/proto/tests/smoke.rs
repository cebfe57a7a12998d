use std::time::Duration;
use xrudp_proto::sim::{Pair, network::Model};
use xrudp_proto::*;

#[test]
fn smoke() {
    let model = Model {
        delay: Duration::from_millis(10),
        ..Model::default()
    };
    let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), model, 1);
    let ok = p.run_while(Duration::from_secs(2), |c| c.all_connected());
    eprintln!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        p.server.stats(),
        p.client().stats(),
        p.client_events(),
        p.network.stats()
    );
    assert!(ok);
    let h = match &p.server_events[0] {
        ServerEvent::Connected { handle, .. } => *handle,
        e => panic!("{e:?}"),
    };
    for i in 0..100u32 {
        p.client_mut().send(0, &i.to_be_bytes()).unwrap();
        p.server.send(h, 1, &[7u8; 3000]).unwrap();
    }
    p.drive();
    let n = p
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Message { .. }))
        .count();
    let m = p
        .client_events()
        .iter()
        .filter(|e| matches!(e, ClientEvent::Message { .. }))
        .count();
    eprintln!("{:?}", p.server.stats());
    assert_eq!((n, m), (100, 100));
}
