//! The proxy's static-upstream routing on pingora-proxy 0.9, for the side-by-side benchmark
//! (issue 18): requests whose `Host` (port stripped, case-insensitive) is one of the given
//! hosts go to the one target over pooled keep-alive HTTP/1.1, with `X-Forwarded-For`
//! (replaced), `X-Forwarded-Proto` and `X-Forwarded-Host` set as Flotilla's proxy sets them;
//! any other host gets 404. Plain HTTP only: pingora's TLS features would bring their own
//! TLS stack, which is not what is compared here.
//!
//! Usage: pingora-proto LISTEN_ADDR TARGET_ADDR THREADS HOST...

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Route {
    target: String,
    hosts: Vec<String>,
}

#[async_trait]
impl ProxyHttp for Route {
    type CTX = Option<String>;
    fn new_ctx(&self) -> Self::CTX {
        None
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let req = session.req_header();
        let host = req
            .uri
            .host()
            .map(str::to_owned)
            .or_else(|| {
                req.headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase())
            });
        match host {
            Some(h) if self.hosts.iter().any(|k| *k == h) => {
                *ctx = Some(h);
                Ok(false)
            }
            _ => {
                session.respond_error(404).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.target.as_str(), false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        upstream.insert_header("x-forwarded-for", client)?;
        upstream.insert_header("x-forwarded-proto", "http")?;
        if let Some(h) = ctx.take() {
            upstream.insert_header("x-forwarded-host", h)?;
        }
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: pingora-proto LISTEN_ADDR TARGET_ADDR THREADS HOST...");
        std::process::exit(2);
    }
    let conf = ServerConf {
        threads: args[3].parse().unwrap_or(2),
        // The same idle upstream connections per worker as Flotilla's pool and nginx's
        // `keepalive 256`.
        upstream_keepalive_pool_size: 512,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let route = Route {
        target: args[2].clone(),
        hosts: args[4..].iter().map(|h| h.to_ascii_lowercase()).collect(),
    };
    let mut service = http_proxy_service(&server.configuration, route);
    service.add_tcp(&args[1]);
    server.add_service(service);
    server.run_forever();
}
