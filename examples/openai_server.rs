//! The OpenAI-compatible test server (tests/openai_server.rs) as a standalone
//! process, for `llmtool bench serve` benchmarks and manual tries:
//!
//!   cargo run --release --example openai_server -- [--port P] [--model NAME]
//!       [--ttft-ms MS] [--token-delay-ms MS] [--tokens N]
//!
//! Prints its URL (what `--url` takes) and serves until killed. `--tokens N`
//! ends every answer after N tokens unless the request says `ignore_eos`
//! (then `max_tokens` decides); `--token-delay-ms 0` (the default) streams as
//! fast as it can, the client-overhead benchmark's setting. Build it with
//! `--release` for benchmarks.

#[path = "../tests/http_accept.rs"]
mod http_accept;
#[path = "../tests/openai_server.rs"]
mod openai_server;

fn main() {
    let mut config = openai_server::Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: {value:?} is not a number")))
        };
        match flag.as_str() {
            "--port" => {
                config.port = u16::try_from(number())
                    .unwrap_or_else(|_| usage(&format!("--port: {value} is out of range")))
            }
            "--model" => config.model = value.clone(),
            "--ttft-ms" => config.ttft_ms = number(),
            "--token-delay-ms" => config.token_delay_ms = number(),
            "--tokens" => config.eos_after = Some(number() as usize),
            other => usage(&format!("unknown option {other}")),
        }
    }
    let server = openai_server::OpenAiServer::start_with(config);
    println!("{}", server.url());
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "openai_server: {problem}\nusage: openai_server [--port P] [--model NAME] \
         [--ttft-ms MS] [--token-delay-ms MS] [--tokens N]"
    );
    std::process::exit(2)
}
