//! The Hub test server (tests/hub_server.rs) as a standalone process, for
//! benchmarks and manual tries:
//!
//!   cargo run --release --example hub_server -- --root DIR --token T [--port P]
//!       [--multipart-threshold BYTES] [--chunk-size BYTES]
//!
//! Prints its endpoint (for `HF_ENDPOINT`) and serves until killed. `--token`
//! may repeat; repos are made through the API (`create_repo`). Build it with
//! `--release` for benchmarks: it hashes every uploaded byte.

#[path = "../tests/http_accept.rs"]
mod http_accept;
#[path = "../tests/hub_server.rs"]
mod hub_server;

use std::path::PathBuf;

fn main() {
    let mut root = None;
    let mut tokens = Vec::new();
    let mut config = hub_server::Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: {value:?} is not a number")))
        };
        match flag.as_str() {
            "--root" => root = Some(PathBuf::from(&value)),
            "--token" => tokens.push(value.clone()),
            "--port" => config.port = number() as u16,
            "--multipart-threshold" => config.multipart_threshold = number(),
            "--chunk-size" => config.chunk_size = number(),
            other => usage(&format!("unknown option {other}")),
        }
    }
    let root = root.unwrap_or_else(|| usage("--root is required"));
    if tokens.is_empty() {
        usage("--token is required");
    }
    let server = hub_server::HubServer::start_with(&root, config);
    for t in &tokens {
        server.add_token(t);
    }
    println!("{}", server.endpoint());
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "hub_server: {problem}\nusage: hub_server --root DIR --token T [--port P] \
         [--multipart-threshold BYTES] [--chunk-size BYTES]"
    );
    std::process::exit(2)
}
