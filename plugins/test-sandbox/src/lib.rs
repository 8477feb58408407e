//! Probes the sandbox a plugin runs in. `/read` answers with the text of the file named by the
//! `file` setting, `/connect` opens a TCP connection to the `addr` setting (`ip:port`) and
//! answers with the first line the other side sends; either answers 403 with the error when the
//! sandbox refuses. Everything else passes.

use std::io::{BufRead, BufReader};

use farmgate_sdk::{Plugin, Request, RouteDecision, Router, Settings, export_plugin};

pub struct Sandbox {
    file: String,
    addr: String,
}

impl Plugin for Sandbox {
    fn new(settings: &Settings) -> Result<Self, String> {
        Ok(Sandbox {
            file: settings.get_or("file", String::new())?,
            addr: settings.get_or("addr", String::new())?,
        })
    }
}

fn answer(result: Result<String, String>) -> RouteDecision {
    match result {
        Ok(text) => RouteDecision::respond(200, "text/plain", text),
        Err(e) => RouteDecision::respond(403, "text/plain", format!("refused: {e}")),
    }
}

impl Sandbox {
    fn read(&self) -> Result<String, String> {
        std::fs::read_to_string(&self.file).map_err(|e| e.to_string())
    }

    fn connect(&self) -> Result<String, String> {
        let stream = std::net::TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim_end().to_string())
    }
}

impl Router for Sandbox {
    fn route(&self, req: &Request) -> RouteDecision {
        match req.path() {
            "/read" => answer(self.read()),
            "/connect" => answer(self.connect()),
            _ => RouteDecision::Pass,
        }
    }
}

export_plugin!(Sandbox);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    #[test]
    fn other_paths_pass_and_a_missing_file_is_refused() {
        let p = Sandbox::new(&testing::settings(r#"{"file": "/no/such/file"}"#)).unwrap();
        assert_eq!(
            p.route(&testing::request("GET", "/").build()),
            RouteDecision::Pass
        );
        let RouteDecision::Respond(r) = p.route(&testing::request("GET", "/read").build()) else {
            panic!("expected an answer");
        };
        assert_eq!(r.status, 403);
    }
}
