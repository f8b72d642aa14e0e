#![cfg(feature = "redis-tls")]
//! `RedisStore` over TLS (feature `redis-tls`), against a Redis server of the test's own that
//! speaks only TLS on a free port of 127.0.0.1, with a certificate authority made for the run
//! (`openssl`). The server and the files go when the test ends.
//!
//! Without `redis-server` or `openssl` the tests print one line and skip, unless
//! `IDEMPOTENT_REQUIRE_SERVICES=1`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idempotent_core::store::RecordState;
use idempotent_core::stores::redis::redis::{Client, TlsCertificates};
use idempotent_core::{Call, Error, IdempotencyStore, RedisStore};

/// A TLS-only Redis server and the certificates it was started with.
struct TlsRedis {
    dir: PathBuf,
    server: Child,
    port: u16,
}

impl TlsRedis {
    /// Makes a certificate authority and a server certificate for `127.0.0.1`, starts the
    /// server, and waits until it accepts connections.
    fn start() -> Option<TlsRedis> {
        let dir = std::env::temp_dir().join(support::unique_name("idempotent-redis-tls"));
        if let Err(error) = std::fs::create_dir_all(&dir) {
            return support::unavailable("a TLS Redis server", "127.0.0.1", error);
        }
        if let Err(why) = make_certificates(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return support::unavailable("openssl", "127.0.0.1", why);
        }
        let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(address) => address.port(),
            Err(error) => return support::unavailable("a free port", "127.0.0.1", error),
        };
        let file = |name: &str| dir.join(name).display().to_string();
        let server = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--tls-port",
                &port.to_string(),
            ])
            .args(["--tls-cert-file", &file("server.crt")])
            .args(["--tls-key-file", &file("server.key")])
            .args(["--tls-ca-cert-file", &file("ca.crt")])
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &dir.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let server = match server {
            Ok(server) => server,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return support::unavailable("redis-server", "127.0.0.1", error);
            }
        };
        let redis = TlsRedis { dir, server, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return support::unavailable(
                    "a TLS Redis server",
                    &redis.url(),
                    "it did not listen within 10 s",
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// The certificate authority that signed the server's certificate, PEM.
    fn authority(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).expect("read the CA certificate")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ca.crt` (a self-signed authority) and `server.crt`/`server.key` (signed by it, for the
/// address 127.0.0.1) in `dir`.
fn make_certificates(dir: &Path) -> Result<(), String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|error| error.to_string())?;
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"],
        ]
        .concat()
        .into_iter()
        .chain([
            "-subj",
            "/CN=idempotent test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .collect(),
        [
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat()
        .into_iter()
        .chain(["-subj", "/CN=127.0.0.1"])
        .collect(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let output = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .map_err(|error| format!("openssl: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "openssl {}: {}",
                args[0],
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_over_tls_trusting_the_given_authority_runs_once_and_replays() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    let certificates = TlsCertificates {
        client_tls: None,
        root_cert: Some(server.authority()),
    };
    let client = Client::build_with_tls(server.url(), certificates).expect("a TLS client");
    let store = RedisStore::builder()
        .key_prefix("idem-tls")
        .connect_with_client(client)
        .await
        .expect("the handshake succeeds with the test's authority");
    let runs = AtomicUsize::new(0);
    for attempt in 0..2 {
        let outcome = Call::new(&store, "tls", "order-1")
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>("shipped".to_owned())
            })
            .await
            .expect("call over TLS");
        assert_eq!(outcome.is_replayed(), attempt == 1);
        assert_eq!(outcome.into_value(), "shipped");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(matches!(
        store.inspect("tls", "order-1").await,
        Ok(RecordState::Completed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_authority_fails_with_a_store_error() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    // `rediss://` verifies against the system's roots, which do not hold the test's authority.
    let started = Instant::now();
    let result = RedisStore::builder()
        .timeout(Duration::from_secs(1))
        .connect(&server.url())
        .await;
    match result {
        Err(Error::Store { .. }) => {}
        Err(other) => panic!("expected Error::Store, got {other} ({other:?})"),
        Ok(_) => panic!("connected to a server whose certificate nobody trusts"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the failed handshake is bounded by the connect timeout"
    );
}
