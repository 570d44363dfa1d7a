//! What the test servers (`hub_server`, `openai_server`) share: the accept
//! loop, one thread per connection until the server is dropped, and the
//! status lines they answer with. The examples that reuse a server declare
//! this module beside it.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running accept loop; stops (and waits for the loop) when dropped.
pub struct Accept {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Accept {
    /// Serves each connection of `listener` on its own thread with `serve`
    /// until `stop` is set (by the drop, or by the server itself).
    pub fn spawn(
        listener: TcpListener,
        stop: Arc<AtomicBool>,
        serve: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> Accept {
        let addr = listener.local_addr().unwrap().to_string();
        let serve = Arc::new(serve);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let serve = serve.clone();
                std::thread::spawn(move || serve(stream));
            }
        });
        Accept {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Accept {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so its loop sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// The reason phrase of an HTTP status line.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
