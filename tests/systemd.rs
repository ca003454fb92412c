//! The packaged cgtproxy under a real systemd (tests/sysd: bookworm's
//! systemd 252 booted in a container with its own network namespace): the
//! .deb built from this tree installs, starts READY, reloads, is restarted
//! by its watchdog, upgrades, and leaves nothing after a purge; `cgtproxy
//! exec` as a user with a user manager lands in the right slice and its
//! traffic follows the rule. Each test boots its own container; they skip
//! when not root or when systemd-nspawn/debootstrap are missing.

mod common;
mod sysd;

use common::TempDir;
use sysd::Container;

/// The Debian version in misc/debian/changelog (the .deb's version).
fn changelog_version() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/misc/debian/changelog")).unwrap();
    let first = text.lines().next().unwrap();
    first[first.find('(').unwrap() + 1..first.find(')').unwrap()].to_owned()
}

/// Boot a container and install the .deb built from this tree; None when
/// the test must skip.
fn container_with_package(tag: &str, debs: &TempDir) -> Option<Container> {
    if let Some(why) = sysd::unavailable() {
        eprintln!("SKIPPED {tag}: {why}");
        return None;
    }
    if !sysd::can_build_deb(tag) {
        return None;
    }
    let deb = sysd::build_deb(&debs.0, None);
    let c = Container::boot(tag)?;
    let out = c.install_deb(&deb);
    assert!(out.contains("Setting up cgtproxy"), "{out}");
    Some(c)
}

/// `systemctl start` of a Type=notify unit returns once it is READY; check
/// it is running, said so, and has not been restarted.
fn assert_ready(c: &Container) {
    assert_eq!(c.prop("cgtproxy", "ActiveState"), "active", "{}", c.journal("cgtproxy"));
    assert_eq!(c.prop("cgtproxy", "SubState"), "running");
    assert_eq!(c.prop("cgtproxy", "StatusText"), "all cgroups classified");
}

/// Nothing of cgtproxy is left in the kernel: table, policy rules, routes.
fn assert_no_kernel_state(c: &Container, when: &str) {
    let (has_table, _) = c.try_sh("nft list table inet cgtproxy");
    assert!(!has_table, "{when}: table inet cgtproxy is still there");
    let rules = c.sh("ip -4 rule show; ip -6 rule show");
    assert!(!rules.contains("fwmark"), "{when}: policy rules left:\n{rules}");
    let routes = c.sh("ip -4 route show table all; ip -6 route show table all");
    assert!(!routes.contains("table 300"), "{when}: routes left:\n{routes}");
}

#[test]
fn package_installs_starts_reloads_upgrades_and_purges_clean() {
    let debs = TempDir::new("sysd-debs");
    let Some(c) = container_with_package("pkg", &debs) else { return };

    // Enable policy: installing enables and starts nothing.
    assert_eq!(c.try_sh("systemctl is-enabled cgtproxy").1.trim(), "disabled");
    assert_eq!(c.try_sh("systemctl is-active cgtproxy").1.trim(), "inactive");

    // The packaged default config (no rules).
    c.sh("systemctl enable --now cgtproxy");
    assert_ready(&c);
    assert!(c.path("/etc/systemd/system/multi-user.target.wants/cgtproxy.service").is_symlink());

    // The example config.
    c.write("/etc/cgtproxy/config.yaml", include_str!("../misc/config/example.yaml"));
    c.sh("systemctl restart cgtproxy");
    assert_ready(&c);
    let rules = c.sh("ip -4 rule show; ip -6 rule show");
    // IPv4 and IPv6, under the unit's sandbox (ProcSubset=pid hides /proc/sys and /proc/net).
    assert_eq!(
        rules.matches("fwmark 0xbb8 lookup 300").count(),
        2,
        "one fwmark rule per family expected:\n{rules}\njournal:\n{}",
        c.journal("cgtproxy")
    );
    c.sh("ip -4 route show table 300 | grep -q 'local default dev lo'");
    c.sh("cgtproxy print --diff");

    // Reload applies a change: another mark, same process.
    let pid = c.prop("cgtproxy", "MainPID");
    c.sh("sed -i 's/mark: 3000/mark: 3001/' /etc/cgtproxy/config.yaml");
    let (same, diff) = c.try_sh("cgtproxy print --diff");
    assert!(!same, "print --diff saw no change before the reload: {diff}");
    c.sh("systemctl reload cgtproxy");
    let applied = c.wait_sh(10, "ip rule show | grep -q 'fwmark 0xbb9 lookup 300' && cgtproxy print --diff");
    assert!(applied, "reload did not apply the new mark:\n{}", c.journal("cgtproxy"));
    assert!(!c.sh("ip rule show").contains("0xbb8"));
    assert_eq!(c.prop("cgtproxy", "MainPID"), pid, "reload restarted the daemon");
    assert_ready(&c);

    // systemd-analyze security: the hardening the unit had (1.3) stays.
    let report = c.sh("systemd-analyze security --no-pager cgtproxy.service");
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for cgtproxy.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security cgtproxy.service: {exposure}");
    assert!(exposure <= 1.5, "exposure {exposure} (was 1.3):\n{report}");

    // An upgrade over the running daemon runs the new binary.
    let newer = format!("{}+ci1", changelog_version());
    let upgrade_dir = TempDir::new("sysd-debs-up");
    let deb2 = sysd::build_deb(&upgrade_dir.0, Some(&newer));
    let old_pid = c.prop("cgtproxy", "MainPID");
    c.install_deb(&deb2);
    assert_eq!(c.sh("dpkg-query -W -f '${Version}' cgtproxy"), newer);
    assert_ready(&c);
    let new_pid = c.prop("cgtproxy", "MainPID");
    assert_ne!(new_pid, old_pid, "the upgrade did not restart the daemon");
    let exe = c.sh(&format!("readlink /proc/{new_pid}/exe"));
    assert_eq!(exe.trim(), "/usr/bin/cgtproxy", "the daemon runs an old binary");
    assert_eq!(c.try_sh("systemctl is-enabled cgtproxy").1.trim(), "enabled", "the upgrade changed the enablement");

    // remove stops the daemon, which removes its kernel state.
    c.sh("dpkg --remove cgtproxy");
    assert_eq!(c.try_sh("systemctl is-active cgtproxy").1.trim(), "inactive");
    assert_no_kernel_state(&c, "after dpkg --remove");

    // purge leaves no service, link, mask or config either.
    c.sh("dpkg --purge cgtproxy");
    assert_eq!(c.prop("cgtproxy", "LoadState"), "not-found");
    let left =
        c.sh("find /etc/systemd /lib/systemd /usr/lib/systemd /etc/cgtproxy -name 'cgtproxy*' 2>/dev/null || true");
    assert!(left.trim().is_empty(), "left after purge:\n{left}");
    assert!(!c.path("/etc/cgtproxy").exists(), "/etc/cgtproxy is left after purge");
    assert_no_kernel_state(&c, "after dpkg --purge");
}

#[test]
fn watchdog_restarts_a_hung_daemon() {
    let debs = TempDir::new("sysd-debs");
    let Some(c) = container_with_package("wdog", &debs) else { return };
    // The packaged WatchdogSec=30s, shortened so the test waits less.
    c.write("/etc/systemd/system/cgtproxy.service.d/watchdog.conf", "[Service]\nWatchdogSec=3s\n");
    c.sh("systemctl daemon-reload && systemctl enable --now cgtproxy");
    assert_ready(&c);
    let pid = c.prop("cgtproxy", "MainPID");
    c.sh(&format!("kill -STOP {pid}"));
    // Watchdog timeout (3 s), SIGABRT, SIGKILL after TimeoutStopSec (15 s),
    // RestartSec (2 s).
    let restarted = c.wait_sh(
        60,
        &format!(
            "[ \"$(systemctl show -p MainPID --value cgtproxy)\" != {pid} ] && systemctl show -p SubState --value cgtproxy | grep -qx running"
        ),
    );
    let journal = c.journal("cgtproxy");
    assert!(restarted, "not restarted after SIGSTOP:\n{journal}");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert!(c.prop("cgtproxy", "NRestarts").parse::<u32>().unwrap() >= 1);
    assert_ready(&c);
    c.sh("nft list table inet cgtproxy >/dev/null");
}

/// What `cgtproxy exec TARGET -- ...` as user tester ran in: its cgroup and
/// output. The command first waits until the daemon has classified its scope
/// (the journal names it), so its traffic meets the rule, not the parent's.
fn exec_as_tester(c: &Container, target: &str, payload: &str) -> (String, String) {
    let cg_file = format!("/home/tester/cgroup-{target}");
    let go_file = format!("/home/tester/go-{target}");
    let script = format!(
        "cgtproxy exec {target} -- bash -c 'sed -n \"s/^0:://p\" /proc/self/cgroup > {cg_file}.tmp && mv {cg_file}.tmp {cg_file}; \
         while [ ! -e {go_file} ]; do sleep 0.05; done; {payload}'"
    );
    let child = c.spawn_user("tester", &script);
    let mut cgroup = String::new();
    assert!(
        common::wait_until(30, || {
            cgroup = std::fs::read_to_string(c.path(&cg_file)).unwrap_or_default().trim().to_owned();
            !cgroup.is_empty()
        }),
        "cgtproxy exec {target} did not start"
    );
    let classified = c.wait_sh(10, &format!("journalctl -u cgtproxy -o verbose | grep -qF '{cgroup}'"));
    assert!(classified, "the daemon did not classify {cgroup}:\n{}", c.journal("cgtproxy"));
    c.write(&go_file, "");
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (cgroup, text)
}

#[test]
fn exec_as_a_user_lands_in_its_slice_and_traffic_follows_the_rule() {
    let debs = TempDir::new("sysd-debs");
    let Some(c) = container_with_package("exec", &debs) else { return };
    c.write("/etc/cgtproxy/config.yaml", include_str!("../misc/config/example.yaml"));
    // A peer: 192.0.2.1:7 answers "pong" (a veth in the container's own
    // network namespace; systemd accepts the connections).
    c.write("/etc/systemd/system/pong.socket", "[Socket]\nListenStream=192.0.2.1:7\nAccept=yes\nFreeBind=yes\n");
    c.write("/etc/systemd/system/pong@.service", "[Service]\nExecStart=/bin/echo pong\nStandardInput=socket\n");
    c.sh("ip link add cgtp0 type veth peer name cgtp1 && ip addr add 192.0.2.1/24 dev cgtp0 && \
         ip link set cgtp0 up && ip link set cgtp1 up && \
         systemctl daemon-reload && systemctl start pong.socket && systemctl enable --now cgtproxy");
    assert_ready(&c);
    let connect = "timeout 5 bash -c \"exec 3<>/dev/tcp/192.0.2.1/7 && cat <&3\"; echo exit=$?";
    let slice = "/user.slice/user-1000.slice/user@1000.service/cgtproxy.slice";

    let (cgroup, out) = exec_as_tester(&c, "direct", connect);
    assert!(cgroup.starts_with(&format!("{slice}/cgtproxy-direct.slice/run-")), "{cgroup}");
    assert!(out.contains("pong") && out.contains("exit=0"), "direct: {out}");

    let (cgroup, out) = exec_as_tester(&c, "drop", connect);
    assert!(cgroup.starts_with(&format!("{slice}/cgtproxy-drop.slice/run-")), "{cgroup}");
    assert!(!out.contains("pong") && !out.contains("exit=0"), "drop let traffic through: {out}");
}

/// The journal's text (`journalctl -u cgtproxy`, default output) says what
/// was classified how and why; status and explain work as a normal user.
#[test]
fn journal_text_and_user_tools_under_systemd() {
    let debs = TempDir::new("sysd-debs");
    let Some(c) = container_with_package("user", &debs) else { return };
    c.write("/etc/cgtproxy/config.yaml", include_str!("../misc/config/example.yaml"));
    c.sh("systemctl enable --now cgtproxy");
    assert_ready(&c);
    let (cgroup, _) = exec_as_tester(&c, "drop", "true");

    // The journal's text names the cgroup, the target and the rule.
    let journal = c.journal("cgtproxy");
    let line = format!("classified {cgroup}: drop (rule 2)");
    assert!(journal.contains(&line), "no {line:?} in:\n{journal}");

    // status and explain work as the user, without root.
    let (ok, out) = c.user_sh("tester", "cgtproxy status");
    assert!(ok && out.contains("daemon: running"), "status as tester: {out}");
    let manager = "/user.slice/user-1000.slice/user@1000.service";
    let (ok, out) = c.user_sh("tester", &format!("cgtproxy explain {manager}"));
    assert!(ok && out.contains("rule 7 (line ") && out.contains("tproxy mihomo"), "explain as tester: {out}");
}
