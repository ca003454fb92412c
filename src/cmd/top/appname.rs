//! Short application names from systemd unit names, as desktops name an
//! app's cgroup (systemd's "Desktop Environments" document:
//! `app[-<launcher>]-<app id>[@<n>].service` or `...-<n>.scope`).

/// The app a cgroup path stands for: `.../app-gnome-org.mozilla.firefox-1234.scope`
/// -> `org.mozilla.firefox`, `.../app-org.foo.Bar@3.service` -> `org.foo.Bar`,
/// `.../foo.service` -> `foo`, anything else its last component.
pub fn app_name(path: &str) -> &str {
    let last = path.rsplit('/').next().unwrap_or(path);
    let last = if last.is_empty() { path } else { last };
    let Some((stem, kind)) = last.rsplit_once('.').filter(|(_, k)| ["service", "scope", "slice"].contains(k)) else {
        return last;
    };
    // `foo@instance.service`: the template's name.
    let stem = stem.split_once('@').map_or(stem, |(s, _)| s);
    let Some(app) = stem.strip_prefix("app-") else {
        return stem;
    };
    // A scope's random suffix: `-1234` (digits), or systemd-run's hex id.
    let app = match app.rsplit_once('-') {
        Some((head, tail)) if kind == "scope" && !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => app,
    };
    // `<launcher>-<app id>`: an app id is a reverse-DNS name (has dots), a
    // launcher (gnome, kde, flatpak, dbus) has none.
    match app.split_once('-') {
        Some((launcher, id)) if !launcher.contains('.') && id.contains('.') => id,
        _ => app,
    }
}

#[cfg(test)]
mod tests {
    use super::app_name;

    #[test]
    fn names_from_unit_names() {
        let cases = [
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-org.mozilla.firefox-1234.scope",
                "org.mozilla.firefox",
            ),
            ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.foo.Bar@3.service", "org.foo.Bar"),
            ("/system.slice/foo.service", "foo"),
            ("/system.slice/getty@tty1.service", "getty"),
            ("/user.slice/app-flatpak-org.gnome.Maps-4567.scope", "org.gnome.Maps"),
            ("/user.slice/app-firefox-99.scope", "firefox"),
            ("/cgtproxy-test-1/proxy", "proxy"),
            ("/", "/"),
            ("/user.slice", "user"),
        ];
        for (path, want) in cases {
            assert_eq!(app_name(path), want, "{path}");
        }
    }
}
