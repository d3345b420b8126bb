//! A real SMTP server for a test: `tests/support/smtp_server.py` (aiosmtpd) in a process of its own,
//! on a port the test picks, so a test can send while it is down and start it afterwards. What it
//! received is read back from the JSON lines it writes, one per accepted message.

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use entitle::{config::Config, mail::Mailer};
use serde_json::Value;
use uuid::Uuid;

/// Generous: a loaded machine makes a test slower, never wrong.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default, Clone)]
pub struct SmtpOptions {
    /// AUTH the server requires: (user, password).
    pub auth: Option<(&'static str, &'static str)>,
    /// Recipients refused with 550 at RCPT.
    pub reject: Vec<&'static str>,
    /// Recipients deferred with 451 at RCPT.
    pub defer: Vec<&'static str>,
}

pub struct SmtpServer {
    pub port: u16,
    options: SmtpOptions,
    received: PathBuf,
    process: Option<Child>,
}

impl SmtpServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start(options: SmtpOptions) -> Self {
        let mut server = Self::on_free_port(options);
        server.start_again();
        server
    }

    /// A server not running yet, on a port free now, for a test that sends before it starts.
    pub fn on_free_port(options: SmtpOptions) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self {
            port,
            options,
            received: std::env::temp_dir().join(format!("entitle-smtp-{}.jsonl", Uuid::new_v4().simple())),
            process: None,
        }
    }

    /// Starts the server process (again) on its port, with what it received so far kept.
    pub fn start_again(&mut self) {
        assert!(self.process.is_none(), "the SMTP server is already running");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--received")
            .arg(&self.received)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((user, password)) = self.options.auth {
            command.args(["--user", user, "--password", password]);
        }
        for address in &self.options.reject {
            command.args(["--reject", address]);
        }
        for address in &self.options.defer {
            command.args(["--defer", address]);
        }
        let mut child = command.spawn().expect("python3 runs");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!(
                "tests/support/smtp_server.py did not start on port {}: {stderr}\n\
                 It needs aiosmtpd: `python3 -m pip install aiosmtpd` (scripts/test installs it).",
                self.port
            );
        }
        self.process = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `smtp://` to this server, with the user and password percent-encoded as given.
    pub fn url(&self, userinfo: Option<&str>) -> String {
        match userinfo {
            Some(userinfo) => format!("smtp://{userinfo}@127.0.0.1:{}", self.port),
            None => format!("smtp://127.0.0.1:{}", self.port),
        }
    }

    /// Every message accepted so far, oldest first.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.received)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Waits until `count` messages were accepted and returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= count || started.elapsed() > DEADLINE {
                assert_eq!(
                    received.len(),
                    count,
                    "messages the SMTP server accepted: {received:#?}"
                );
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.received);
    }
}

/// The mailer the service builds from `SMTP_URL` and `EMAIL_FROM`, through the real config rules.
pub fn mailer_for(smtp_url: &str, email_from: &str) -> Mailer {
    let config = config_for(smtp_url, email_from);
    Mailer::from_config(&config.email).unwrap().expect("SMTP_URL is set")
}

pub fn config_for(smtp_url: &str, email_from: &str) -> Config {
    Config::from_lookup(|name| match name {
        "SMTP_URL" => Some(smtp_url.to_owned()),
        "EMAIL_FROM" => Some(email_from.to_owned()),
        _ => None,
    })
    .unwrap()
}
