//! Secrets out of what is shown: every URL or DSN that reaches a log line,
//! an error or `--help` goes through [`url`] first.

/// `url` with its credentials hidden: the userinfo of each server of a
/// comma-separated list (`nats://user:pass@host` → `nats://***@host`), and
/// the values of query parameters that carry secrets (`password=`,
/// `pass=`, `token=`, `secret=`, `key=`, `sslpassword=`, …). It reads the
/// text without parsing it, so a malformed URL is redacted too.
pub fn url(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let (before_query, query) = match server.split_once('?') {
                Some((before, query)) => (before, Some(query)),
                None => (server, None),
            };
            let start = before_query.find("://").map_or(0, |i| i + 3);
            let end = before_query[start..]
                .find(['/', '#'])
                .map_or(before_query.len(), |i| start + i);
            let mut shown = match before_query[start..end].rfind('@') {
                Some(at) => format!(
                    "{}***{}",
                    &before_query[..start],
                    &before_query[start + at..]
                ),
                None => before_query.to_owned(),
            };
            if let Some(query) = query {
                shown.push('?');
                let pairs: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
                        _ => pair.to_owned(),
                    })
                    .collect();
                shown.push_str(&pairs.join("&"));
            }
            shown
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password", "pass", "passwd", "pwd", "token", "secret", "key", "apikey", "api_key",
    ]
    .iter()
    .any(|secret| name == *secret || name.ends_with(&format!("_{secret}")))
        || name.starts_with("sslpassword")
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn userinfo_and_secret_parameters_are_hidden() {
        assert_eq!(
            url("postgres://hookmesh:s3cret@db:5432/mesh"),
            "postgres://***@db:5432/mesh"
        );
        assert_eq!(url("nats://token@h:4222"), "nats://***@h:4222");
        assert_eq!(
            url("nats://u:p@a:4222, nats://b:4222"),
            "nats://***@a:4222, nats://b:4222"
        );
        assert_eq!(
            url("postgres://h/x?user=u&password=pw&sslmode=require"),
            "postgres://h/x?user=u&password=***&sslmode=require"
        );
        assert_eq!(url("mysql://u:pw@h/x"), "mysql://***@h/x");
        assert_eq!(url("http://svc:pw@api:8000/v1"), "http://***@api:8000/v1");
        assert_eq!(
            url("https://hooks.example/x?token=abc&channel=ops"),
            "https://hooks.example/x?token=***&channel=ops"
        );
        assert_eq!(
            url("sqlite:///tmp/x.db?mode=rwc"),
            "sqlite:///tmp/x.db?mode=rwc"
        );
        assert_eq!(url("not a url at all"), "not a url at all");
        // An @ in the path is not userinfo.
        assert_eq!(url("http://h/a@b"), "http://h/a@b");
    }
}
