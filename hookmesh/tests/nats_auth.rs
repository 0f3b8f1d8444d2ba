//! hookmesh on a NATS that authenticates, every way NATS offers: one user
//! per service with permissions that allow exactly what that service needs
//! (and NATS refusing the rest), then a token, an NKey, a JWT credentials
//! file and mutual TLS with certificates made here. No credential given to
//! the mesh appears in anything it logs or prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookmesh_tests::process::ServiceProcess;
use hookmesh_tests::{TestDir, eventually, free_port, secrets, sign, unix_now};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_hookmesh");

/// A nats-server of the test's own, with `config` (JetStream on, a store
/// and a port added), stopped when dropped.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    async fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let file = dir.join("nats-server.conf");
        std::fs::write(
            &file,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 4MB\n\
                 jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 10GB }}\n{config}\n",
                dir.join("store").display()
            ),
        )
        .unwrap();
        let binary = hookmesh_nats::server::find().unwrap_or_else(|error| panic!("{error}"));
        let child = Command::new(&binary.path)
            .arg("-c")
            .arg(&file)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("nats-server.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(20), "nats-server listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Every log line in `dir`'s files, and `extra`, hold none of `secrets`.
fn assert_no_secret(dir: &Path, extra: &str, secrets: &[&str]) {
    let mut shown = extra.to_owned();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            shown.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    assert!(shown.lines().count() > 10, "there are logs to search");
    for secret in secrets {
        assert!(
            !shown.contains(secret),
            "a secret reached a log line or an output: {:?}",
            shown
                .lines()
                .find(|line| line.contains(secret))
                .map(|line| line.replace(secret, "<SECRET>"))
        );
    }
}

fn buddy_request(
    http: &reqwest::Client,
    gateway: &str,
    secret: &str,
    id: &str,
) -> reqwest::RequestBuilder {
    let body = format!(
        r#"{{"id":"{id}","type":"buddy.match.created","timestamp":"2025-11-14T10:30:00Z","data":{{"tenant_id":"acme","program_id":"auth","match_id":"m-{id}","buddy_id":"p-1","newcomer_id":"p-2"}}}}"#
    );
    http.post(format!("{gateway}/webhooks/buddy-events"))
        .header("content-type", "application/json")
        .header("X-Webhook-Id", format!("wh-{id}"))
        .header("X-Webhook-Timestamp", unix_now().to_string())
        .header(
            "X-Webhook-Signature",
            sign::sha256_header(secret, body.as_bytes()),
        )
        .body(body)
}

/// Waits until the csr-consumer behind `gateway` has applied the match of
/// `id`: the whole way, through every service's connection, worked.
async fn wait_applied(http: &reqwest::Client, gateway: &str, api_key: &str, id: &str) {
    eventually(
        Duration::from_secs(60),
        "the buddy event applied",
        || async {
            let answer = http
                .get(format!("{gateway}/api/csr/participants/p-2/journey"))
                .bearer_auth(api_key)
                .send()
                .await
                .ok()?;
            let journey: Value = answer.json().await.ok()?;
            let _ = id;
            (journey["programs"][0]["stage"] == "matched").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_runs_as_its_own_user_and_nats_refuses_what_it_may_not_do() {
    let dir = TestDir::new("nats-users");
    let passwords = [
        ("HOOKMESH_NATS_GATEWAY_PASSWORD", "gw-pass-7f3a"),
        ("HOOKMESH_NATS_CSR_PASSWORD", "csr-pass-91c2"),
        ("HOOKMESH_NATS_BATCH_PASSWORD", "batch-pass-4d8e"),
        ("HOOKMESH_NATS_SWEEP_PASSWORD", "sweep-pass-2b6f"),
        ("HOOKMESH_NATS_ADMIN_PASSWORD", "admin-pass-c5a1"),
        ("HOOKMESH_NATS_SYS_PASSWORD", "sys-pass-e9d0"),
    ];
    let accounts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats/server/accounts.conf");
    let broker = Broker::start(
        dir.path(),
        &format!("include \"{}\"", accounts.display()),
        &passwords,
    )
    .await;
    let password = |variable: &str| passwords.iter().find(|(v, _)| *v == variable).unwrap().1;
    let http = hookmesh_runtime::http::client_builder().build().unwrap();
    let trading_api = hookmesh_tests::trading_api(hookmesh_trading_api_sim::Knobs {
        run_time_ms: 500,
        ..Default::default()
    })
    .await;
    // A database password (trust authentication takes any) and a Trading
    // API address with credentials, to show neither is ever logged.
    let db = hookmesh_tests::TestDb::postgres().await;
    let database = |name: &str| match &db {
        Some(db) => db.url.replacen(
            "postgres://postgres@",
            "postgres://postgres:db-pass-63aa@",
            1,
        ),
        None => format!(
            "sqlite://{}",
            dir.path().join(format!("{name}.db")).display()
        ),
    };
    let trading_url = trading_api
        .url()
        .replacen("http://", "http://svc:api-pass-0c4b@", 1);

    // The gateway with its credentials in NATS_URL; the others by variable.
    let gateway_port = free_port();
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let gateway_nats = broker.url().replacen(
        "nats://",
        &format!(
            "nats://gateway:{}@",
            password("HOOKMESH_NATS_GATEWAY_PASSWORD")
        ),
        1,
    );
    let mut gateway = ServiceProcess::start(
        BINARY,
        "gateway",
        "gateway",
        &[
            ("NATS_URL", gateway_nats),
            ("HOOKMESH_HTTP_ADDR", format!("127.0.0.1:{gateway_port}")),
            ("HOOKMESH_SECRET_BUDDY", secrets::BUDDY.to_owned()),
            (
                "HOOKMESH_API_KEYS",
                format!("acme:{}", secrets::API_KEY_ACME),
            ),
            ("HOOKMESH_CALLBACK_SECRET", secrets::CALLBACK.to_owned()),
        ],
        format!("{gateway_url}/readyz"),
        dir.path(),
    )
    .await;
    gateway.wait_ready(&http).await;
    let mut services = vec![gateway];
    for (name, user, variable) in [
        ("csr-consumer", "csr-consumer", "HOOKMESH_NATS_CSR_PASSWORD"),
        (
            "batch-processor",
            "batch-processor",
            "HOOKMESH_NATS_BATCH_PASSWORD",
        ),
        (
            "sweep-worker",
            "sweep-worker",
            "HOOKMESH_NATS_SWEEP_PASSWORD",
        ),
    ] {
        let ops = format!("127.0.0.1:{}", free_port());
        let mut service = ServiceProcess::start(
            BINARY,
            name,
            name,
            &[
                ("NATS_URL", broker.url()),
                ("NATS_USER", user.to_owned()),
                ("NATS_PASSWORD", password(variable).to_owned()),
                ("DATABASE_URL", database(name)),
                ("HOOKMESH_OPS_ADDR", ops.clone()),
                ("TRADING_API_URL", trading_url.clone()),
                ("TRADING_API_KEY", secrets::TRADING_API.to_owned()),
                ("HOOKMESH_PUBLIC_URL", gateway_url.clone()),
                ("HOOKMESH_CALLBACK_SECRET", secrets::CALLBACK.to_owned()),
            ],
            format!("http://{ops}/readyz"),
            dir.path(),
        )
        .await;
        service.wait_ready(&http).await;
        services.push(service);
    }

    // A buddy event through the gateway to the csr-consumer, read back
    // through the gateway from the csr-consumer's read API.
    let answer = buddy_request(&http, &gateway_url, secrets::BUDDY, "u1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
    wait_applied(&http, &gateway_url, secrets::API_KEY_ACME, "u1").await;
    // A sweep through the gateway, the sweep-worker and the Trading API.
    let trigger = http
        .post(format!("{gateway_url}/api/pipelines/trigger"))
        .bearer_auth(secrets::API_KEY_ACME)
        .json(
            &json!({"ticker": "BTC-USD", "fast_range": [10, 20], "slow_range": [20, 30],
                      "step": 5, "min_trades": 50, "strategy_type": "SMA"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(trigger.status(), reqwest::StatusCode::ACCEPTED);
    let job = trigger.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(60), "the sweep completed", || async {
        let answer = http
            .get(format!("{gateway_url}/api/pipelines/{job}"))
            .bearer_auth(secrets::API_KEY_ACME)
            .send()
            .await
            .ok()?;
        let job: Value = answer.json().await.ok()?;
        (job["status"] == "COMPLETED").then_some(())
    })
    .await;
    // A campaign, read back from the batch-processor.
    let registered = http
        .post(format!("{gateway_url}/api/campaigns"))
        .bearer_auth(secrets::API_KEY_ACME)
        .json(&json!({"campaign_id": "auth", "recipients": [
            {"provider": "sendgrid", "message_id": "m-auth", "address": "a@example.com"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), reqwest::StatusCode::ACCEPTED);
    eventually(
        Duration::from_secs(30),
        "the campaign read back",
        || async {
            let answer = http
                .get(format!("{gateway_url}/api/campaigns/auth"))
                .bearer_auth(secrets::API_KEY_ACME)
                .send()
                .await
                .ok()?;
            (answer.status() == reqwest::StatusCode::OK).then_some(())
        },
    )
    .await;
    // An operator's command, as admin.
    let dlq = std::process::Command::new(BINARY)
        .env("NATS_URL", broker.url())
        .env("NATS_USER", "admin")
        .env("NATS_PASSWORD", password("HOOKMESH_NATS_ADMIN_PASSWORD"))
        .args(["dlq", "list"])
        .output()
        .unwrap();
    assert!(
        dlq.status.success(),
        "{}",
        String::from_utf8_lossy(&dlq.stderr)
    );

    // The gateway's user may not publish what a consumer publishes, nor
    // pull a consumer's messages: NATS refuses both.
    let (refusals, mut refused) = tokio::sync::mpsc::unbounded_channel();
    let as_gateway = async_nats::ConnectOptions::with_user_and_password(
        "gateway".to_owned(),
        password("HOOKMESH_NATS_GATEWAY_PASSWORD").to_owned(),
    )
    .event_callback(move |event| {
        let refusals = refusals.clone();
        async move {
            if let async_nats::Event::ServerError(error) = event {
                let _ = refusals.send(error.to_string());
            }
        }
    })
    .connect(broker.url())
    .await
    .unwrap();
    for subject in [
        "csr.journey.completed",
        "$JS.API.CONSUMER.MSG.NEXT.BUDDY.csr-consumer",
    ] {
        as_gateway.publish(subject, "{}".into()).await.unwrap();
        as_gateway.flush().await.unwrap();
        let refusal = tokio::time::timeout(Duration::from_secs(10), refused.recv())
            .await
            .expect("a refusal")
            .unwrap();
        assert!(
            refusal.contains("Permissions Violation") && refusal.contains(subject),
            "{subject}: {refusal}"
        );
    }

    for service in services {
        service.stop().await;
    }
    let help = std::process::Command::new(BINARY)
        .arg("--help")
        .env(
            "NATS_URL",
            broker
                .url()
                .replacen("nats://", "nats://admin:help-pass-77ee@", 1),
        )
        .env("NATS_PASSWORD", "help-pass-77ee")
        .env("DATABASE_URL", "postgres://u:help-pass-77ee@h/x")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("NATS_URL"));
    let mut secrets_given: Vec<&str> = passwords.iter().map(|(_, p)| *p).collect();
    secrets_given.extend([
        "db-pass-63aa",
        "api-pass-0c4b",
        "help-pass-77ee",
        secrets::BUDDY,
        secrets::API_KEY_ACME,
        secrets::CALLBACK,
        secrets::TRADING_API,
    ]);
    assert_no_secret(dir.path(), &help, &secrets_given);
}

/// `hookmesh up` against `broker` with `auth` (variables), until one buddy
/// event went the whole way; then stopped. Returns what it printed.
async fn up_through(broker: &Broker, dir: &Path, auth: &[(&str, String)]) -> String {
    let data = dir.join("data");
    let port = free_port();
    let mut command = Command::new(BINARY);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HOOKMESH_")
            || variable.starts_with("NATS_")
            || variable == "DATABASE_URL"
        {
            command.env_remove(variable);
        }
    }
    let mut up = command
        .args(["up", "--no-install"])
        .env(
            "NATS_URL",
            broker
                .url()
                .replacen("nats://127.0.0.1", "nats://localhost", 1),
        )
        .envs(auth.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HOOKMESH_DATA_DIR", &data)
        .env("HOOKMESH_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("up.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("ready") {
                return;
            }
        }
        panic!(
            "hookmesh up exited without a ready line: {}",
            std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()
        );
    })
    .await
    .expect("a ready line within 60 s");
    let secrets_file = std::fs::read_to_string(data.join("secrets.env")).unwrap();
    let value = |name: &str| {
        secrets_file
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let api_key = value("HOOKMESH_API_KEYS")
        .split_once(':')
        .unwrap()
        .1
        .to_owned();
    let gateway = format!("http://127.0.0.1:{port}");
    let http = hookmesh_runtime::http::client_builder().build().unwrap();
    // The generated API key is the local tenant's; the event names acme.
    let body = r#"{"id":"e-auth","type":"buddy.match.created","timestamp":"2025-11-14T10:30:00Z","data":{"tenant_id":"local","program_id":"auth","match_id":"m-auth","buddy_id":"p-1","newcomer_id":"p-2"}}"#;
    let answer = http
        .post(format!("{gateway}/webhooks/buddy-events"))
        .header("content-type", "application/json")
        .header("X-Webhook-Id", "wh-auth")
        .header("X-Webhook-Timestamp", unix_now().to_string())
        .header(
            "X-Webhook-Signature",
            sign::sha256_header(&value("HOOKMESH_SECRET_BUDDY"), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
    wait_applied(&http, &gateway, &api_key, "e-auth").await;
    if let Some(pid) = up.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), up.wait()).await;
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_runs_on_a_token_an_nkey_a_credentials_file_and_mutual_tls() {
    let root = TestDir::new("nats-auth-ways");
    let sub = |name: &str| {
        let path = root.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };

    // A token.
    let dir = sub("token");
    let token = "tok-3e9f/+=";
    let broker = Broker::start(
        &dir,
        &format!("authorization {{ token: \"{token}\" }}"),
        &[],
    )
    .await;
    let printed = up_through(&broker, &dir, &[("NATS_TOKEN", token.to_owned())]).await;
    assert_no_secret(&dir, &printed, &[token]);
    drop(broker);

    // An NKey user.
    let dir = sub("nkey");
    let user = nkeys::KeyPair::new_user();
    let seed_file = dir.join("user.nk");
    std::fs::write(&seed_file, user.seed().unwrap()).unwrap();
    let broker = Broker::start(
        &dir,
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}",
            user.public_key()
        ),
        &[],
    )
    .await;
    let printed = up_through(
        &broker,
        &dir,
        &[("NATS_NKEY", seed_file.display().to_string())],
    )
    .await;
    assert_no_secret(&dir, &printed, &[&user.seed().unwrap()]);
    drop(broker);

    // A JWT credentials file, the server in operator mode.
    let dir = sub("creds");
    let (config, creds) = operator_mode(&dir);
    let broker = Broker::start(&dir, &config, &[]).await;
    let printed = up_through(
        &broker,
        &dir,
        &[("NATS_CREDS", creds.display().to_string())],
    )
    .await;
    let seed = std::fs::read_to_string(&creds).unwrap();
    let seed = seed
        .lines()
        .find(|line| line.starts_with("SU"))
        .unwrap()
        .to_owned();
    assert_no_secret(&dir, &printed, &[&seed]);
    drop(broker);

    // Mutual TLS: the server verifies the client's certificate.
    let dir = sub("mtls");
    let pki = make_pki(&dir);
    let broker = Broker::start(
        &dir,
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true, timeout: 2 }}",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
        &[],
    )
    .await;
    up_through(
        &broker,
        &dir,
        &[
            ("NATS_CA", pki.ca.display().to_string()),
            ("NATS_CERT", pki.client_cert.display().to_string()),
            ("NATS_KEY", pki.client_key.display().to_string()),
        ],
    )
    .await;
    // Without the client certificate, the command says why and stops.
    let refused = std::process::Command::new(BINARY)
        .env("NATS_URL", broker.url())
        .env("NATS_CA", &pki.ca)
        .args(["dlq", "list"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot reach the broker"), "{stderr}");
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// NATS JWT claims, signed by `signer`, as nats-io/jwt writes them.
fn encode_jwt(mut claims: Value, signer: &nkeys::KeyPair) -> String {
    claims["iat"] = json!(now());
    claims["iss"] = json!(signer.public_key());
    let hash = ring::digest::digest(
        &ring::digest::SHA512_256,
        &serde_json::to_vec(&claims).unwrap(),
    );
    claims["jti"] = json!(data_encoding::BASE32_NOPAD.encode(hash.as_ref()));
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let input = format!(
        "{header}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    let signature = signer.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An operator, a system account, a JetStream account with one user, the
/// server configuration that trusts them, and the user's credentials file.
fn operator_mode(dir: &Path) -> (String, PathBuf) {
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let mesh = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let account = |key: &nkeys::KeyPair, name: &str, jetstream: i64| {
        encode_jwt(
            json!({"sub": key.public_key(), "name": name, "nats": {
                "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                           "wildcards": true, "conn": -1, "leaf": -1, "mem_storage": jetstream,
                           "disk_storage": jetstream, "streams": -1, "consumer": -1},
                "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2}}),
            &operator,
        )
    };
    let operator_jwt = encode_jwt(
        json!({"sub": operator.public_key(), "name": "hookmesh-test", "nats": {
            "system_account": system.public_key(), "type": "operator", "version": 2}}),
        &operator,
    );
    let user_jwt = encode_jwt(
        json!({"sub": user.public_key(), "name": "mesh", "nats": {
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}}),
        &mesh,
    );
    let creds = dir.join("mesh.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let config = format!(
        "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {sys}: {sys_jwt}\n  {mesh_key}: {mesh_jwt}\n}}\n",
        sys = system.public_key(),
        sys_jwt = account(&system, "SYS", 0),
        mesh_key = mesh.public_key(),
        mesh_jwt = account(&mesh, "HOOKMESH", -1),
    );
    (config, creds)
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for localhost and a client certificate.
fn make_pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "hookmesh test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, "hookmesh");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server-key.pem", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
    }
}
