//! Loading and validating a realistic config: 3 roles, 50 hosts, 3 accessories, a secrets file
//! without command substitution. The target is under 5 ms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_deploy::config::{LoadOptions, load};

/// Write the project into a temporary directory and return it.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut yml = String::from(
        "service: shop\nimage: acme/shop\nregistry:\n  server: ghcr.io\n  username: acme\n  password:\n    - KAMAL_REGISTRY_PASSWORD\n",
    );
    yml.push_str("env:\n  clear:\n    RAILS_ENV: production\n  secret:\n    - RAILS_MASTER_KEY\n    - DB_PASSWORD:MAIN_DB_PASSWORD\nproxy:\n  host: shop.example.com\n  app_port: 3000\n  healthcheck:\n    path: /up\nservers:\n");
    let mut host = 0;
    for (role, count) in [("web", 30), ("jobs", 15), ("cron", 5)] {
        let _ = writeln!(yml, "  {role}:\n    hosts:");
        for _ in 0..count {
            host += 1;
            let _ = writeln!(yml, "      - 10.0.{}.{}", host / 200, host % 200 + 1);
        }
        if role != "web" {
            let _ = writeln!(yml, "    cmd: bin/{role}");
        }
    }
    yml.push_str("accessories:\n");
    for (name, image) in [
        ("db", "postgres:16"),
        ("cache", "valkey/valkey:8"),
        ("search", "opensearch:2"),
    ] {
        let _ = writeln!(
            yml,
            "  {name}:\n    image: {image}\n    host: 10.0.9.1\n    env:\n      secret:\n        - MAIN_DB_PASSWORD\n    directories:\n      - data:/data"
        );
    }
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join(".kamal")).expect("mkdir");
    std::fs::write(dir.path().join("config/deploy.yml"), yml).expect("write");
    std::fs::write(
        dir.path().join(".kamal/secrets"),
        "KAMAL_REGISTRY_PASSWORD=$REGISTRY_TOKEN\nRAILS_MASTER_KEY='abc'\nMAIN_DB_PASSWORD=\"p${REGISTRY_TOKEN}w\"\n",
    )
    .expect("write");
    dir
}

fn bench(c: &mut Criterion) {
    let dir = project();
    let opts = LoadOptions {
        env: BTreeMap::from([("REGISTRY_TOKEN".to_string(), "tok".to_string())]),
        ..LoadOptions::new(dir.path())
    };
    let config = load(&opts).expect("bench config loads");
    assert_eq!(config.all_hosts().len(), 50);
    c.bench_function("load_3_roles_50_hosts_3_accessories", |b| {
        b.iter(|| load(&opts).expect("loads"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
