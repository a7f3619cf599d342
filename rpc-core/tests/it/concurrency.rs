//! Many calls at once on one connection, answered out of order.

use std::sync::atomic::Ordering;

use futures_util::future::join_all;
use rpc_core::Channel;

use crate::common::{self, Sleep, TestClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_on_one_connection_each_get_their_own_reply() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    // Random sleeps make the server finish the calls in an order unrelated to sending.
    let calls = (0..1000u64).map(|id| {
        let client = client.clone();
        let millis = fastrand::u64(0..50);
        async move { (id, client.sleep(Sleep { id, millis }).await) }
    });
    let results = join_all(calls).await;
    for (id, result) in results {
        let reply = result.unwrap_or_else(|status| panic!("call {id} failed: {status}"));
        assert_eq!(reply.id, id, "call {id} got another call's reply");
    }
    assert_eq!(server.probe.finished.load(Ordering::SeqCst), 1000);
    assert_eq!(server.probe.peers.lock().expect("lock").len(), 1, "all calls shared one connection");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_does_not_hold_up_fast_ones() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(Sleep { id: 0, millis: 60_000 }).await }
    });
    for id in 1..=20 {
        let reply = client.sleep(Sleep { id, millis: 0 }).await.expect("fast call");
        assert_eq!(reply.id, id);
    }
    assert!(!slow.is_finished());
    slow.abort();
    server.shutdown().await;
}
