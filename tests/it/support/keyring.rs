//! The OS keyring for real, headless: a private D-Bus session with
//! gnome-keyring-daemon's Secret Service, the kernel's keyutils user keyring,
//! and the binary run in an environment the test owns completely.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> PathBuf {
    super::bin_path()
}

/// A private D-Bus session bus with gnome-keyring-daemon's Secret Service on
/// it (both stopped on drop). `unlocked`: started with `--unlock` (a login
/// collection that accepts items); otherwise the collection is absent.
pub struct SecretService {
    /// `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
    dbus_pid: i32,
    keyring: std::process::Child,
}

impl SecretService {
    /// Start one with its files under `home`.
    pub fn start(home: &Path, unlocked: bool) -> SecretService {
        let run = home.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        // The bus's own configuration, not the system's session.conf: that
        // one reads /usr/share/dbus-1/services, where gnome-keyring's
        // org.freedesktop.secrets.service lets the first message to the name
        // (the readiness ping below, when it beats the daemon started here)
        // activate a second, locked daemon outside this test's control. That
        // one then owns the name for good, and the unlocked collection this
        // test waits for never appears (a CI run failed so, after 120 s).
        // Without service directories nothing is ever activated.
        let config = home.join("dbus-session.conf");
        std::fs::write(
            &config,
            concat!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n",
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n",
                "<busconfig>\n",
                "  <type>session</type>\n",
                "  <listen>unix:tmpdir=/tmp</listen>\n",
                "  <auth>EXTERNAL</auth>\n",
                "  <policy context=\"default\">\n",
                "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n",
                "    <allow eavesdrop=\"true\"/>\n",
                "    <allow own=\"*\"/>\n",
                "  </policy>\n",
                "</busconfig>\n",
            ),
        )
        .unwrap();
        let out = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args([
                "--fork",
                "--nopidfile",
                "--print-address=1",
                "--print-pid=1",
            ])
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", &run)
            .stderr(Stdio::null())
            .output()
            .expect("dbus-daemon (apt-get install dbus)");
        assert!(out.status.success(), "dbus-daemon failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let address = lines.next().expect("address").trim().to_owned();
        let dbus_pid: i32 = lines.next().expect("pid").trim().parse().expect("pid");
        let spawn_keyring = || {
            let mut cmd = Command::new("gnome-keyring-daemon");
            cmd.args(["--foreground", "--components=secrets"])
                .env("HOME", home)
                .env("XDG_RUNTIME_DIR", &run)
                .env("XDG_DATA_HOME", home.join("data"))
                .env("DBUS_SESSION_BUS_ADDRESS", &address)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if unlocked {
                cmd.arg("--unlock").stdin(Stdio::piped());
            } else {
                cmd.stdin(Stdio::null());
            }
            let mut keyring = cmd
                .spawn()
                .expect("gnome-keyring-daemon (apt-get install gnome-keyring)");
            if unlocked {
                let mut stdin = keyring.stdin.take().unwrap();
                stdin.write_all(b"keyring-password").unwrap();
            }
            keyring
        };
        let mut ss = SecretService {
            address: address.clone(),
            dbus_pid,
            keyring: spawn_keyring(),
        };
        // Wait until the service answers on the bus and its collection
        // takes items: on a loaded machine that took more than 10 s, so the
        // bound is generous (it only matters when something is broken). A
        // daemon that died, or has not come up in 30 s (once in a CI run its
        // login collection never appeared), is started again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut attempt_ends = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let ok = Command::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.secrets",
                    "/org/freedesktop/secrets",
                    "org.freedesktop.DBus.Peer.Ping",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &ss.address)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok && (!unlocked || ss.writable()) {
                return ss;
            }
            let died = ss.keyring.try_wait().ok().flatten().is_some();
            if died || std::time::Instant::now() > attempt_ends {
                let _ = ss.keyring.kill();
                let _ = ss.keyring.wait();
                ss.keyring = spawn_keyring();
                attempt_ends = std::time::Instant::now() + std::time::Duration::from_secs(30);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "the Secret Service did not come up on {} within 120 s",
            ss.address
        );
    }

    /// Whether the default collection takes an item yet: the daemon answers
    /// on the bus a moment before its unlocked login collection exists.
    fn writable(&self) -> bool {
        let mut child = match Command::new("secret-tool")
            .args([
                "store",
                "--label=probe",
                "service",
                "guildhall-image-test-probe",
                "username",
                "probe",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => return false,
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"probe");
        }
        let stored = child.wait().map(|s| s.success()).unwrap_or(false);
        if stored {
            let _ = Command::new("secret-tool")
                .args([
                    "clear",
                    "service",
                    "guildhall-image-test-probe",
                    "username",
                    "probe",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
                .output();
        }
        stored
    }

    /// `secret-tool lookup service guildhall-image username HOST`.
    pub fn lookup(&self, host: &str) -> Option<String> {
        let out = Command::new("secret-tool")
            .args(["lookup", "service", "guildhall-image", "username", host])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .output()
            .expect("secret-tool (apt-get install libsecret-tools)");
        (out.status.success() && !out.stdout.is_empty())
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
        // SAFETY: kill(2) on a pid we started.
        unsafe { libc::kill(self.dbus_pid, libc::SIGTERM) };
    }
}

/// The keyutils key for a host in the user keyring, removed on drop (tests
/// share the kernel's user keyring, so each uses its own registry host).
pub struct KeyutilsKey {
    /// Its description.
    pub description: String,
}

impl KeyutilsKey {
    /// The key guildhall-image uses for `host`.
    pub fn for_host(host: &str) -> KeyutilsKey {
        KeyutilsKey {
            description: format!("keyring-rs:{host}@guildhall-image"),
        }
    }

    /// Its payload, when the key exists in `@u`.
    pub fn read(&self) -> Option<String> {
        let out = Command::new("keyctl")
            .args(["search", "@u", "user", &self.description])
            .output()
            .expect("keyctl (apt-get install keyutils)");
        if !out.status.success() {
            return None;
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let out = Command::new("keyctl")
            .args(["pipe", &id])
            .output()
            .expect("keyctl");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for KeyutilsKey {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("keyctl")
            .args(["search", "@u", "user", &self.description])
            .output()
        {
            if out.status.success() {
                let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                let _ = Command::new("keyctl").args(["invalidate", &id]).output();
            }
        }
    }
}

/// What a run of the binary printed.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panic (showing the output) unless it exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Both streams.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// An environment for the binary that owns everything credentials depend
/// on: HOME, config and docker config dirs, PATH, D-Bus, the keyring mode.
/// Nothing leaks in from the test's own environment.
pub struct Env {
    /// The temporary home.
    pub home: tempfile::TempDir,
    vars: HashMap<String, String>,
    /// Every output of every command run (checked for secrets).
    pub outputs: std::cell::RefCell<Vec<String>>,
}

impl Env {
    /// A fresh home; no D-Bus session (so the Secret Service is absent),
    /// an empty docker config.
    pub fn new() -> Env {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        std::fs::create_dir_all(h.join("docker")).unwrap();
        std::fs::create_dir_all(h.join("bin")).unwrap();
        let mut vars = HashMap::new();
        let path = format!(
            "{}:{}",
            h.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        for (k, v) in [
            ("HOME", h.display().to_string()),
            ("XDG_CONFIG_HOME", h.join("config").display().to_string()),
            ("XDG_RUNTIME_DIR", h.join("run").display().to_string()),
            ("DOCKER_CONFIG", h.join("docker").display().to_string()),
            ("PATH", path),
            ("LANG", "C.UTF-8".into()),
        ] {
            vars.insert(k.to_owned(), v);
        }
        Env {
            home,
            vars,
            outputs: Default::default(),
        }
    }

    /// Set a variable.
    pub fn set(&mut self, k: &str, v: &str) -> &mut Env {
        self.vars.insert(k.to_owned(), v.to_owned());
        self
    }

    /// Remove a variable.
    pub fn unset(&mut self, k: &str) -> &mut Env {
        self.vars.remove(k);
        self
    }

    /// Join a Secret Service session.
    pub fn with_secret_service(&mut self, ss: &SecretService) -> &mut Env {
        self.set("DBUS_SESSION_BUS_ADDRESS", &ss.address)
    }

    /// The variables commands run with.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    /// The docker config dir.
    pub fn docker_dir(&self) -> PathBuf {
        self.home.path().join("docker")
    }

    /// A directory on PATH for helper scripts.
    pub fn bin_dir(&self) -> PathBuf {
        self.home.path().join("bin")
    }

    /// Run the binary with `args`, `stdin` as standard input.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .envs(&self.vars)
            .current_dir(self.home.path());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the binary");
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let run = Run::from(child.wait_with_output().expect("wait"));
        self.outputs.borrow_mut().push(format!(
            "$ guildhall-image {}\n{}",
            args.join(" "),
            run.all()
        ));
        run
    }

    /// Panic if `secret` appears in anything a command printed.
    pub fn assert_never_printed(&self, secret: &str) {
        for o in self.outputs.borrow().iter() {
            assert!(!o.contains(secret), "a secret was printed:\n{o}");
        }
    }
}

/// Write an executable script.
pub fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}
