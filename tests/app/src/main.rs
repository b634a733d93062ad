//! The app under test: a tiny HTTP/1.1 server packaged as a `FROM scratch` image.
//!
//! Routes: `GET /up` (health), `GET /version` (the version baked in at build time
//! through `FLOTILLA_TESTAPP_VERSION`, overridable at run time by `APP_VERSION`),
//! `GET /slow?ms=N` (answers after N milliseconds, for drain tests), `GET /log?TEXT`
//! (prints `testapp log: TEXT` to stdout, for log tests), and `GET /`
//! (version and host name). Behaviour is chosen at run time by `APP_MODE`:
//! `healthy` (default), `unhealthy` (`/up` answers 503), `healthy-after:N`
//! (`/up` answers 503 for the first N seconds), `exit` (exits with status 3 at start).
//! `PORT` picks the port (default 80). SIGTERM and SIGINT exit at once.
//! `app has-env NAME=VALUE...` (what `flotilla app exec` runs in the image, which has no
//! shell) exits 0 when every variable has that value, else 1, printing no value.
//! `app store FILE TEXT` writes TEXT to FILE and `app fetch FILE` prints it: a stand-in for a
//! database writing to its volume, for accessory tests (the image has no shell).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Healthy,
    Unhealthy,
    HealthyAfter(Duration),
    Exit,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "" | "healthy" => Ok(Mode::Healthy),
        "unhealthy" => Ok(Mode::Unhealthy),
        "exit" => Ok(Mode::Exit),
        other => match other.strip_prefix("healthy-after:") {
            Some(n) => n
                .parse::<u64>()
                .map(|s| Mode::HealthyAfter(Duration::from_secs(s)))
                .map_err(|_| format!("APP_MODE healthy-after:N needs whole seconds, got {n:?}")),
            None => Err(format!(
                "unknown APP_MODE {other:?}: use healthy, unhealthy, healthy-after:N or exit"
            )),
        },
    }
}

struct App {
    mode: Mode,
    version: String,
    started: Instant,
}

/// `store FILE TEXT`: writes TEXT to FILE (durably: a database's write).
fn store(args: &[String]) -> i32 {
    let [file, text] = args else {
        eprintln!("usage: app store FILE TEXT");
        return 2;
    };
    let written = std::fs::File::create(file).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("testapp: store {file}: {e}");
            1
        }
    }
}

/// `fetch FILE`: prints what FILE holds.
fn fetch(args: &[String]) -> i32 {
    let [file] = args else {
        eprintln!("usage: app fetch FILE");
        return 2;
    };
    match std::fs::read_to_string(file) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("testapp: fetch {file}: {e}");
            1
        }
    }
}

/// `has-env NAME=VALUE...`: whether the environment holds these exact values.
fn has_env(pairs: &[String]) -> i32 {
    let mut code = 0;
    for pair in pairs {
        let (name, want) = pair.split_once('=').unwrap_or((pair, ""));
        let ok = std::env::var(name).is_ok_and(|v| v == want);
        println!("{name}: {}", if ok { "as expected" } else { "different" });
        if !ok {
            code = 1;
        }
    }
    code
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("has-env") => std::process::exit(has_env(&args[1..])),
        Some("store") => std::process::exit(store(&args[1..])),
        Some("fetch") => std::process::exit(fetch(&args[1..])),
        _ => {}
    }
    let mode = match parse_mode(&std::env::var("APP_MODE").unwrap_or_default()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("testapp: {e}");
            std::process::exit(2);
        }
    };
    if mode == Mode::Exit {
        // With APP_DUMP_SECRET=1, like a real app dumping its settings as it dies: a secret
        // in the container's log, which must stay on the host.
        if std::env::var("APP_DUMP_SECRET").is_ok_and(|v| v == "1") {
            let secret = std::env::var("APP_SECRET").unwrap_or_default();
            eprintln!("testapp: APP_MODE=exit, exiting at start (APP_SECRET={secret})");
        } else {
            eprintln!("testapp: APP_MODE=exit, exiting at start");
        }
        std::process::exit(3);
    }
    let version = std::env::var("APP_VERSION")
        .ok()
        .or(option_env!("FLOTILLA_TESTAPP_VERSION").map(str::to_owned))
        .unwrap_or_else(|| "dev".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "80".to_owned());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("testapp: bind 0.0.0.0:{port}: {e}");
            std::process::exit(2);
        }
    };
    println!("testapp {version} listening on 0.0.0.0:{port} in mode {mode:?}");
    // As PID 1 in a container SIGTERM would otherwise be ignored and `docker stop` would wait
    // out its whole timeout; like a real app, exit when asked (the proxy has already drained).
    if let Err(e) = ctrlc::set_handler(|| std::process::exit(0)) {
        eprintln!("testapp: cannot handle SIGTERM: {e}");
    }
    let app = std::sync::Arc::new(App {
        mode,
        version,
        started: Instant::now(),
    });
    for stream in listener.incoming().flatten() {
        let app = app.clone();
        std::thread::spawn(move || {
            let _ = serve(&app, stream);
        });
    }
}

/// Serves requests on one connection (keep-alive) until the client closes it.
fn serve(app: &App, stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut close = false;
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if lower == "connection: close" {
                close = true;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        if content_length > 0 {
            let mut body = vec![0; content_length];
            std::io::Read::read_exact(&mut reader, &mut body)?;
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = route(app, target);
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            _ => "Service Unavailable",
        };
        // One write per response, and no Nagle: small writes would each wait for a delayed
        // ACK and cost ~40 ms per request.
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-App-Version: {}\r\n{}\r\n{body}",
            body.len(),
            app.version,
            if close { "Connection: close\r\n" } else { "" },
        );
        out.write_all(response.as_bytes())?;
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn route(app: &App, target: &str) -> (u16, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/up" => {
            let healthy = match app.mode {
                Mode::Healthy => true,
                Mode::Unhealthy | Mode::Exit => false,
                Mode::HealthyAfter(d) => app.started.elapsed() >= d,
            };
            if healthy {
                (200, "up\n".to_owned())
            } else {
                (503, "not ready\n".to_owned())
            }
        }
        "/version" => (200, format!("{}\n", app.version)),
        "/slow" => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1000);
            std::thread::sleep(Duration::from_millis(ms));
            (200, format!("slow {ms}ms from {}\n", app.version))
        }
        // A line in the container's log on demand, for tests of following logs.
        "/log" => {
            println!("testapp log: {query}");
            (200, "logged\n".to_owned())
        }
        "/" => {
            let host = std::env::var("KAMAL_HOST").unwrap_or_default();
            (200, format!("flotilla testapp {} {host}\n", app.version))
        }
        _ => (404, "not found\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(mode: Mode) -> App {
        App {
            mode,
            version: "v7".to_owned(),
            started: Instant::now(),
        }
    }

    /// The modes a test picks by env are parsed, and a typo is a clear error.
    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("").unwrap(), Mode::Healthy);
        assert_eq!(parse_mode("unhealthy").unwrap(), Mode::Unhealthy);
        assert_eq!(
            parse_mode("healthy-after:5").unwrap(),
            Mode::HealthyAfter(Duration::from_secs(5))
        );
        assert!(
            parse_mode("healthy-after:x")
                .unwrap_err()
                .contains("whole seconds")
        );
        assert!(parse_mode("sick").unwrap_err().contains("unknown APP_MODE"));
    }

    /// `/up` follows the mode; `/version` reports the baked-in version.
    #[test]
    fn routes_follow_mode() {
        assert_eq!(route(&app(Mode::Healthy), "/up").0, 200);
        assert_eq!(route(&app(Mode::Unhealthy), "/up").0, 503);
        assert_eq!(
            route(&app(Mode::HealthyAfter(Duration::from_secs(60))), "/up").0,
            503
        );
        assert_eq!(
            route(&app(Mode::Healthy), "/version"),
            (200, "v7\n".to_owned())
        );
        assert_eq!(route(&app(Mode::Healthy), "/slow?ms=1").0, 200);
        assert_eq!(route(&app(Mode::Healthy), "/nope").0, 404);
    }
}
