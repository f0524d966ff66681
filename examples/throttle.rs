//! A TCP proxy that paces what each connection receives, the way an object store limits each
//! connection (S3 serves one GET stream at a fraction of what the client can take; the way to
//! go faster is several ranged GETs at once). `scripts/bench-s3 --per-connection N` puts it
//! between the local S3 server and both clients, so a plain `curl` GET and the daemon's ranged
//! GETs meet the same per-connection limit.
//!
//!   throttle LISTEN UPSTREAM MIB_PER_SECOND
//!
//! Prints the address it listens on, then serves until killed. Requests go upstream
//! unpaced; each connection's responses are paced to `MIB_PER_SECOND`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: throttle LISTEN UPSTREAM MIB_PER_SECOND");
        std::process::exit(2);
    }
    let rate: f64 = match args[3].parse::<f64>() {
        Ok(r) if r > 0.0 => r * (1 << 20) as f64,
        _ => {
            eprintln!("throttle: MIB_PER_SECOND must be a positive number, not {:?}", args[3]);
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&args[1]).unwrap_or_else(|e| {
        eprintln!("throttle: listen on {}: {e}", args[1]);
        std::process::exit(1);
    });
    println!("{}", listener.local_addr().expect("a bound listener has an address"));
    std::io::stdout().flush().ok();
    for client in listener.incoming() {
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                eprintln!("throttle: accept: {e}");
                continue;
            }
        };
        let server = match TcpStream::connect(&args[2]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("throttle: connect to {}: {e}", args[2]);
                continue;
            }
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
        std::thread::spawn(move || pump(c2, s2, None));
        std::thread::spawn(move || pump(server, client, Some(rate)));
    }
}

/// Copy `from` to `to` until either side closes, at most `rate` bytes per second (an idle
/// connection earns no credit: a kept-alive connection's next response is paced too); then
/// close both directions.
fn pump(mut from: TcpStream, mut to: TcpStream, rate: Option<f64>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut next = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(rate) = rate {
            // this chunk leaves once the previous one's time is used up
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
            next += Duration::from_secs_f64(n as f64 / rate);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = (from.shutdown(Shutdown::Both), to.shutdown(Shutdown::Both));
}
