//! An etcd server of a test's own, on free loopback ports with a temporary data directory
//! (the `etcd` binary comes from Debian's `etcd-server`, which the test script installs;
//! `ETCD_BIN` points elsewhere). Included with `#[path]` by the tests that need one.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::discovery::{EtcdOptions, EtcdRegistry, Registry};

/// The lease TTL of the registries [`Etcd::registry`] makes: short, so that expiry is seen
/// quickly.
pub const TTL: Duration = Duration::from_secs(2);

/// An etcd server of this test's own, stopped (and its data removed) on drop.
pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
}

impl Etcd {
    pub async fn start() -> Etcd {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rpc-etcd-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut etcd = Etcd { child: None, client_port: free_port(), peer_port: free_port(), dir };
        etcd.spawn().await;
        etcd
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub async fn registry(&self) -> EtcdRegistry {
        EtcdRegistry::connect([self.endpoint()], EtcdOptions::new().ttl(TTL)).await.expect("etcd client")
    }

    async fn spawn(&mut self) {
        let binary = std::env::var_os("ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
        std::fs::create_dir_all(&self.dir).expect("etcd data dir");
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("etcd log file");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start etcd ({}): {err}. Install Debian's etcd-server (scripts/test.sh does) \
                     or set ETCD_BIN",
                    binary.display()
                )
            });
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(registry) = EtcdRegistry::connect([self.endpoint()], EtcdOptions::new()).await
                && registry.discover("ready.Check").await.is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not start; see {:?}",
                self.dir.with_extension("log")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports, with its data, or without (`wipe`).
    pub async fn restart(&mut self, wipe: bool) {
        self.kill();
        if wipe {
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
        }
        self.spawn().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("log"));
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
