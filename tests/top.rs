//! `cgtproxy top` end to end: the daemon in a test namespace, apps under
//! direct, drop and tproxy rules sending traffic to a peer namespace (the
//! tproxy's listener in the daemon's namespace), and `top` in a real
//! terminal (tmux): its rows, targets and rates, the filter key, and `q`
//! giving the shell back. Also `--once --json` and an unprivileged run.

mod common;
use common::*;

use std::process::Command;

/// An app: sends 1000 bytes every 20 ms over TCP (or UDP datagrams) forever.
const SENDER: &str = r#"
import socket, sys, time
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if proto == "tcp":
    s = socket.create_connection((addr, port), timeout=5)
    send = lambda: s.sendall(b"x" * 1000)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send = lambda: s.sendto(b"x" * 1000, (addr, port))
print("SENDING", flush=True)
while True:
    try:
        send()
    except OSError:
        pass
    time.sleep(0.02)
"#;

/// A tmux server of our own (`-S`: its socket in the temp directory),
/// killed and its socket removed on drop, whatever happened.
struct Tmux {
    sock: std::path::PathBuf,
}

impl Tmux {
    fn new(cmd: &str) -> Self {
        let sock = std::env::temp_dir().join(format!("cgtproxy-top-{}.tmux", std::process::id()));
        let t = Tmux { sock };
        t.run(&["new-session", "-d", "-x", "160", "-y", "40", "-s", "top", cmd]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-S").arg(&self.sock).args(args).output().expect("tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Wait up to `secs` for the screen to satisfy `cond`; the last screen.
    fn wait(&self, secs: u64, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        if wait_until(secs, || {
            last = self.screen();
            cond(&last)
        }) {
            return last;
        }
        panic!("{what}: not on the screen within {secs}s:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.sock).arg("kill-server").status();
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// A rate on `line` (`12.3 KiB/s`) that is not zero.
fn has_rate(line: &str) -> bool {
    let w: Vec<&str> = line.split_whitespace().collect();
    w.windows(2).any(|p| p[1].ends_with("B/s") && p[0].parse::<f64>().is_ok_and(|n| n > 0.0))
}

fn row<'a>(screen: &'a str, app: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.starts_with(app))
}

#[test]
fn top_shows_apps_targets_and_rates_in_a_terminal() {
    if !root("top_shows_apps_targets_and_rates_in_a_terminal") {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED top_shows_apps_targets_and_rates_in_a_terminal: needs tmux (apt-get install tmux)");
        return;
    }
    let bed = Testbed::new("top");
    let sink = Proc::spawn(&format!("{} {} sink 7000", bed.remote.enter(), helper()));
    sink.wait_for("READY", 10);
    let tproxy = Proc::spawn(&format!("{} {} sink 7893 transparent", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    let cg = TestCgroups::new("top");
    for app in ["direct-app", "proxy-app", "drop-app"] {
        cg.mkdir(app);
    }
    let rel = &cg.rel;
    let config = format!(
        "version: 1\n\
         bypass: [127.0.0.0/8]\n\
         tproxies:\n\
         \x20 px: {{mark: 3000, port: 7893, no-udp: true}}\n\
         rules:\n\
         \x20 - {{match: '^{rel}/proxy', tproxy: px}}\n\
         \x20 - {{match: '^{rel}/drop', drop: true}}\n\
         \x20 - {{match: '^{rel}/direct', direct: true}}\n"
    );
    let (mut daemon, cfg) = start_daemon(&bed.local, &config);
    let tmp = TempDir::new("top");
    let sender = tmp.0.join("sender.py");
    std::fs::write(&sender, SENDER).unwrap();
    let app = |sub: &str, proto: &str, port: u16| {
        let p = Proc::spawn(&format!(
            "sh -c 'echo $$ > {}/cgroup.procs && exec {} python3 {} {proto} {REMOTE4} {port}'",
            cg.dir.join(sub).display(),
            bed.local.enter(),
            sender.display()
        ));
        p.wait_for("SENDING", 10);
        p
    };
    let apps = [app("direct-app", "tcp", 7000), app("proxy-app", "tcp", 7001), app("drop-app", "udp", 9999)];

    let state = cfg.with_extension("state.json");
    let top = format!("env CGTPROXY_STATE={} {} {} -c {}", state.display(), bed.local.enter(), bin(), cfg.display());

    // One sample as JSON: the same model, with numbers to check.
    let json = sh(&format!("{top} top --once --json --interval 1"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let app_of = |name: &str| v["apps"].as_array().unwrap().iter().find(|a| a["name"] == name).cloned();
    for (name, target) in [("direct-app", "direct"), ("proxy-app", "tproxy px"), ("drop-app", "drop")] {
        let a = app_of(name).unwrap_or_else(|| panic!("no {name} in {json}"));
        assert_eq!(a["target"], target, "{name}: {a}");
    }
    for name in ["direct-app", "proxy-app"] {
        let a = app_of(name).unwrap();
        assert!(a["out"]["bytes_per_s"].as_f64().unwrap() > 0.0, "{name} has no rate: {a}");
        assert_eq!(a["conns"][0]["route"], if name == "proxy-app" { "proxy" } else { "direct" }, "{a}");
    }
    for t in ["direct", "drop", "tproxy px"] {
        let row = v["targets"].as_array().unwrap().iter().find(|r| r["target"] == t).unwrap();
        assert!(row["out"]["packets_per_s"].as_f64().unwrap() > 0.0, "target {t} counted nothing: {row}");
    }

    // Without privilege: sockets and the config's view, and a header that
    // says what needs CAP_NET_ADMIN.
    let copy = tmp.0.join("cgtproxy");
    std::fs::copy(bin(), &copy).unwrap();
    sh(&format!("chmod 755 {0} {1} && chmod 644 {2} && chmod 755 {1}", copy.display(), tmp.0.display(), cfg.display()));
    let user = sh(&format!(
        "{} setpriv --reuid=65534 --regid=65534 --clear-groups {} -c {} top --once --interval 0.5",
        bed.local.enter(),
        copy.display(),
        cfg.display()
    ));
    assert!(user.contains("need CAP_NET_ADMIN"), "{user}");
    assert!(row(&user, "proxy-app").is_some_and(|l| l.contains("tproxy px")), "{user}");

    // The terminal.
    let tmux = Tmux::new("env PS1='SHELL-PROMPT$ ' sh");
    tmux.wait(5, "the shell prompt", |s| s.contains("SHELL-PROMPT$"));
    tmux.keys(&[&format!("{top} top"), "Enter"]);
    let screen = tmux.wait(10, "three apps with rates", |s| {
        row(s, "direct-app").is_some_and(has_rate)
            && row(s, "proxy-app").is_some_and(has_rate)
            && row(s, "drop-app").is_some()
    });
    eprintln!("top's screen:\n{screen}");
    assert!(row(&screen, "proxy-app").unwrap().contains("tproxy px"), "{screen}");
    assert!(row(&screen, "drop-app").unwrap().contains("drop"), "{screen}");
    for t in ["direct ", "drop ", "tproxy px "] {
        let line = screen.lines().find(|l| l.starts_with(t)).unwrap_or_else(|| panic!("no target {t}:\n{screen}"));
        assert!(has_rate(line), "target {t} without a rate:\n{screen}");
    }

    // The filter.
    // (not "proxy": every test path contains "cgtproxy")
    tmux.keys(&["/", "proxy-a", "Enter"]);
    tmux.wait(5, "only the proxied app", |s| row(s, "proxy-app").is_some() && row(s, "direct-app").is_none());
    // Its connections.
    tmux.keys(&["Enter"]);
    tmux.wait(5, "the proxied app's connection", |s| s.contains(&format!("{REMOTE4}:7001")) && s.contains("proxy"));
    tmux.keys(&["Escape"]);

    // q gives the shell back: the alternate screen is gone.
    tmux.keys(&["q"]);
    let after = tmux.wait(5, "the shell again", |s| !s.contains("TARGET") && s.contains("SHELL-PROMPT$"));
    assert!(after.contains(" top"), "the shell's own screen is back:\n{after}");
    drop(tmux);

    drop(apps);
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert_clean(&bed.local);
}
