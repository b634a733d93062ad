//! TLS on the NATS `flotilla setup` boots, attacked on the fleet: a plaintext client with
//! valid credentials is refused, a passive observer between an executor and NATS sees no job
//! subject and no secret during a real deploy, and an impostor on NATS's port (a listener with
//! a certificate for the right names from another CA) is refused by the CLI through its
//! tunnel, by every executor and by the scheduler service. Each of these passes only because
//! of TLS pinned to the project's CA: without it the plaintext client gets its PONG, the
//! relay records the subjects, and the impostor reads the clients' CONNECT.

use super::{BareProject, version_of};
use crate::support::{fleet, ssh_ok};
use flotilla_e2e::fleet::{Host, wait_until};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the executors and the CLI get to come to the impostor (executors retry with a
/// backoff of up to 10 s) and to NATS again after it is back.
const RECONNECT_WAIT: Duration = Duration::from_secs(60);
/// A read from NATS that gets nothing for this long has failed (it answers in microseconds).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the recording relay listens on the executor's host: a loopback address, so the
/// executor checks NATS's certificate for `127.0.0.1`, one of the names it carries.
const RELAY: &str = "127.0.0.1:14222";

const FLEET_BIN: &str = env!("CARGO_BIN_EXE_flotilla-fleet");

/// A process the test started; killed (by its pid) when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A client that authenticates with the operators' own key but speaks plaintext after
/// NATS's INFO: what it gets back before NATS hangs up.
fn plaintext_session(host: &Host, operator_seed: &str) -> String {
    use base64::Engine as _;
    let mut tcp = TcpStream::connect((host.addr, 4222)).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut info = String::new();
    BufReader::new(tcp.try_clone().unwrap())
        .read_line(&mut info)
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(info.trim_start_matches("INFO ").trim()).unwrap();
    assert_eq!(json["tls_required"], true, "NATS offers plaintext: {info}");
    let key = nkeys::KeyPair::from_seed(operator_seed.trim()).unwrap();
    let nonce = json["nonce"].as_str().unwrap_or_default();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(key.sign(nonce.as_bytes()).unwrap());
    let connect = serde_json::json!({
        "verbose": false, "pedantic": false, "protocol": 1, "headers": true,
        "nkey": key.public_key(), "sig": sig,
    });
    tcp.write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    match tcp.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("NATS kept a plaintext client connected: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// After setup: the project's CA is private on the operator's machine, NATS's key is private
/// on the control host, and every executor pins the project's CA. A plaintext client holding
/// the operators' key is refused. During a real deploy, a relay recording every byte between
/// the second host's executor and NATS sees no job subject, no event subject, no image name
/// and no secret value, while the deploy goes through it and succeeds.
#[test]
fn plaintext_is_refused_and_the_wire_shows_no_job_or_secret() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    let project = BareProject::new(&fleet, &[h1, h2]);
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);

    let dot = project.root().join(".flotilla");
    assert_eq!(mode(&dot), 0o700);
    assert_eq!(mode(&dot.join("nats-ca.pem")), 0o600);
    assert_eq!(mode(&dot.join("nats-ca.key")), 0o600);
    assert_eq!(
        ssh_ok(
            &fleet,
            h1,
            "stat -c %a /etc/flotilla/nats /etc/flotilla/nats/server-key.pem"
        ),
        "700\n600"
    );
    let ca = std::fs::read_to_string(dot.join("nats-ca.pem")).unwrap();
    for h in [h1, h2] {
        assert_eq!(
            ssh_ok(&fleet, h, "cat /etc/flotilla/nats-ca.pem"),
            ca.trim(),
            "{} pins the project's CA",
            h.name
        );
        assert!(
            ssh_ok(&fleet, h, "cat /etc/flotilla/executor.conf")
                .contains("nats_ca = /etc/flotilla/nats-ca.pem")
        );
    }

    let seed = std::fs::read_to_string(dot.join("nats-operator.nk")).unwrap();
    let answer = plaintext_session(h1, &seed);
    assert!(
        !answer.contains("PONG"),
        "a plaintext client was admitted: {answer:?}"
    );

    // A passive observer on h2's path to NATS: h2's executor reaches NATS only through it.
    let record = project.root().join("wire.bin");
    std::fs::write(&record, b"").unwrap();
    let _relay = Started(
        fleet
            .on_host(h2)
            .arg(FLEET_BIN)
            .args(["relay", RELAY, &format!("{}:4222", h1.addr)])
            .arg(&record)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    ssh_ok(
        &fleet,
        h2,
        &format!(
            "sed -i 's#^nats_url = .*#nats_url = nats://{RELAY}#' /etc/flotilla/executor.conf && \
             docker restart flotilla-executor >/dev/null"
        ),
    );
    project.flotilla_ok(&["deploy", "--version", "v2"], &[("APP_VERSION", "v2")]);
    assert_eq!(version_of(h2), "v2");
    let wire = std::fs::read(&record).unwrap();
    assert!(
        wire.len() > 4096,
        "the relay carried only {} bytes: h2's executor did not go through it",
        wire.len()
    );
    let seen = |needle: &str| {
        wire.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    let job_subject = format!("flotilla.job.{}", h2.addr.to_string().replace('.', "-"));
    for clear in [
        job_subject.as_str(),
        "flotilla.evt.",
        "testapp",
        "unused-by-this-registry",
    ] {
        assert!(!seen(clear), "{clear:?} crossed the wire in clear");
    }
}

/// An impostor takes NATS's port on the control host, with a certificate for the control
/// host's address and `127.0.0.1` from a CA of its own, offering plaintext in its INFO. The
/// CLI (through its SSH tunnel), both executors and `flotilla scheduler run` pinning the
/// project's CA all refuse it: none sends it a CONNECT. With NATS back, the service connects
/// with the same pin and the CLI works again.
#[test]
fn an_impostor_on_the_nats_port_is_refused_by_cli_executors_and_service() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    let project = BareProject::new(&fleet, &[h1, h2]);
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let dot = project.root().join(".flotilla");
    let state = project.root().join("service-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(dot.join("scheduler.key"), state.join("scheduler.key")).unwrap();
    let service = |url: &str| {
        let mut c = Command::new(&project.flotilla);
        c.args(["scheduler", "run", "--nats", url, "--nats-ca"])
            .arg(dot.join("nats-ca.pem"))
            .arg("--nkey")
            .arg(dot.join("nats-operator.nk"))
            .arg("--state")
            .arg(&state)
            .env_remove("FLOTILLA_NATS_URL")
            .env_remove("FLOTILLA_NATS_CA");
        c
    };
    let nats_url = format!("nats://{}:4222", h1.addr);

    ssh_ok(&fleet, h1, "docker stop flotilla-nats >/dev/null");
    let record = project.root().join("impostor.log");
    std::fs::write(&record, b"").unwrap();
    let impostor = Started(
        fleet
            .on_host(h1)
            .arg(FLEET_BIN)
            .args(["mitm", "0.0.0.0:4222"])
            .arg(&record)
            .args(["--names", &format!("{},127.0.0.1,localhost", h1.addr)])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };

    let out = project.flotilla(&["lock", "status"], &[]);
    assert!(
        !out.status.success(),
        "the CLI talked to the impostor: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = service(&nats_url).output().unwrap();
    assert!(
        !out.status.success(),
        "the service ran on the impostor: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The CLI and the service came once each; the two executors retry on their own.
    assert!(
        wait_until(RECONNECT_WAIT, || lines().len() >= 6),
        "too few connections reached the impostor: {:?}",
        lines()
    );
    drop(impostor);
    let seen = lines();
    assert!(
        seen.iter().all(|l| l == "refused"),
        "a client sent its CONNECT to the impostor: {seen:?}"
    );

    // NATS back: the same pin is accepted.
    ssh_ok(&fleet, h1, "docker start flotilla-nats >/dev/null");
    assert!(
        wait_until(RECONNECT_WAIT, || project
            .flotilla(&["lock", "status"], &[])
            .status
            .success()),
        "the CLI does not reach NATS again"
    );
    let mut running = Started(service(&nats_url).stderr(Stdio::piped()).spawn().unwrap());
    let stderr = running.0.stderr.take().unwrap();
    let serving = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("scheduler service on"));
    assert!(serving, "the service did not connect with the project's CA");
}
