//! Failure classification (seed 001's `error_patterns`): which kinds of
//! failure a `failure_context` shows. Plain code; the rules, in order:
//!
//! | pattern | the platform's reason or status | exit code | log excerpt or failed step names contain |
//! |---|---|---|---|
//! | `cancelled` | `cancelled`, `canceled`, `aborted` | | |
//! | `timeout` | `timed_out`, `stuck_or_timeout_failure`, `job_execution_timeout`, anything with `timeout` | 124 | `timed out`, `timeout`, `deadline exceeded`, `etimedout` |
//! | `connection_refused` | | | `connection refused`, `econnrefused` |
//! | `network` | | | `could not resolve host`, `enotfound`, `getaddrinfo`, `temporary failure in name resolution`, `name or service not known`, `connection reset`, `econnreset`, `network is unreachable`, `tls handshake` |
//! | `out_of_memory` | `oom`… | 137 | `out of memory`, `oomkilled`, `oom-kill`, `cannot allocate memory`, `outofmemoryerror`, `memoryerror` |
//! | `disk_full` | | | `no space left on device`, `enospc`, `disk quota exceeded` |
//! | `dependency` | `missing_dependency_failure` | | `could not resolve dependencies`, `unable to resolve dependency`, `no matching version`, `npm err! 404`, `e404`, `modulenotfounderror`, `no module named`, `cannot find module`, `could not find a version that satisfies`, `failed to select a version`, `failed to download` |
//! | `compilation` | | | `compilation failed`, `compile error`, `could not compile`, `error[e`, `cannot find symbol`, `syntaxerror`, `undefined reference` |
//! | `test_failure` | Jenkins `unstable` | | `test failed`, `tests failed`, `failing test`, `test result: failed`, `assertion failed`, `assertionerror`, `failures: `, ` failed, `; or a failed step named like a test (`test`, `spec`) |
//! | `permission` | | | `permission denied`, `eacces`, `403 forbidden`, `401 unauthorized`, `authentication failed`, `access denied` |
//! | `infrastructure` | `runner_system_failure`, `scheduler_failure`, `api_failure`, `data_integrity_failure`, `runner_unsupported`, `infrastructure_fail`, `startup_failure` | | `lost communication with the server`, `runner has received a shutdown signal` |
//! | `unknown` | when nothing above matched | | |
//!
//! Matching ignores case. Patterns a publisher already put in
//! `error_patterns` are kept when they are names of this list. A failure
//! may show several patterns (a TLS handshake timeout is `timeout` and
//! `network`).

use hookmesh_contracts::ci::{CiMetadata, ErrorPattern, FailureContext};
use hookmesh_contracts::validation::StrEnum as _;

struct Rule {
    pattern: ErrorPattern,
    /// Matched against the platform's reason and status.
    reasons: &'static [&'static str],
    exit_codes: &'static [i32],
    /// Matched against the log excerpt and the failed steps' names.
    texts: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        pattern: ErrorPattern::Cancelled,
        reasons: &["cancelled", "canceled", "aborted"],
        exit_codes: &[],
        texts: &[],
    },
    Rule {
        pattern: ErrorPattern::Timeout,
        reasons: &["timed_out", "timeout", "timedout"],
        exit_codes: &[124],
        texts: &["timed out", "timeout", "deadline exceeded", "etimedout"],
    },
    Rule {
        pattern: ErrorPattern::ConnectionRefused,
        reasons: &[],
        exit_codes: &[],
        texts: &["connection refused", "econnrefused"],
    },
    Rule {
        pattern: ErrorPattern::Network,
        reasons: &[],
        exit_codes: &[],
        texts: &[
            "could not resolve host",
            "enotfound",
            "getaddrinfo",
            "temporary failure in name resolution",
            "name or service not known",
            "connection reset",
            "econnreset",
            "network is unreachable",
            "tls handshake",
        ],
    },
    Rule {
        pattern: ErrorPattern::OutOfMemory,
        reasons: &["oom", "out_of_memory"],
        exit_codes: &[137],
        texts: &[
            "out of memory",
            "oomkilled",
            "oom-kill",
            "cannot allocate memory",
            "outofmemoryerror",
            "memoryerror",
        ],
    },
    Rule {
        pattern: ErrorPattern::DiskFull,
        reasons: &[],
        exit_codes: &[],
        texts: &["no space left on device", "enospc", "disk quota exceeded"],
    },
    Rule {
        pattern: ErrorPattern::Dependency,
        reasons: &["missing_dependency_failure"],
        exit_codes: &[],
        texts: &[
            "could not resolve dependencies",
            "unable to resolve dependency",
            "no matching version",
            "npm err! 404",
            "e404",
            "modulenotfounderror",
            "no module named",
            "cannot find module",
            "could not find a version that satisfies",
            "failed to select a version",
            "failed to download",
        ],
    },
    Rule {
        pattern: ErrorPattern::Compilation,
        reasons: &[],
        exit_codes: &[],
        texts: &[
            "compilation failed",
            "compile error",
            "could not compile",
            "error[e",
            "cannot find symbol",
            "syntaxerror",
            "undefined reference",
        ],
    },
    Rule {
        pattern: ErrorPattern::TestFailure,
        reasons: &["unstable"],
        exit_codes: &[],
        texts: &[
            "test failed",
            "tests failed",
            "failing test",
            "test result: failed",
            "assertion failed",
            "assertionerror",
            "failures: ",
            " failed, ",
        ],
    },
    Rule {
        pattern: ErrorPattern::Permission,
        reasons: &[],
        exit_codes: &[],
        texts: &[
            "permission denied",
            "eacces",
            "403 forbidden",
            "401 unauthorized",
            "authentication failed",
            "access denied",
        ],
    },
    Rule {
        pattern: ErrorPattern::Infrastructure,
        reasons: &[
            "runner_system_failure",
            "scheduler_failure",
            "api_failure",
            "data_integrity_failure",
            "runner_unsupported",
            "infrastructure_fail",
            "startup_failure",
        ],
        exit_codes: &[],
        texts: &[
            "lost communication with the server",
            "runner has received a shutdown signal",
        ],
    },
];

/// Whether a failed step's name says it ran tests.
fn names_a_test(step: &str) -> bool {
    let step = step.to_ascii_lowercase();
    step.contains("test") || step.contains("spec")
}

/// The patterns `context` shows, in the order of [`ErrorPattern`]; never
/// empty (`unknown` when nothing matched).
pub fn classify(context: &FailureContext, metadata: &CiMetadata) -> Vec<ErrorPattern> {
    let reasons: Vec<String> = [
        context.reason.as_deref(),
        metadata.platform_status.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(str::to_ascii_lowercase)
    .collect();
    let mut text = context
        .log_excerpt
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    for step in &context.failed_steps {
        text.push('\n');
        text.push_str(&step.to_ascii_lowercase());
    }
    let mut patterns: Vec<ErrorPattern> = context
        .error_patterns
        .iter()
        .filter_map(|name| ErrorPattern::from_wire(name))
        .filter(|pattern| *pattern != ErrorPattern::Unknown)
        .collect();
    for rule in RULES {
        let by_reason = reasons
            .iter()
            .any(|reason| rule.reasons.iter().any(|r| reason.contains(r)));
        let by_exit = context
            .exit_code
            .is_some_and(|code| rule.exit_codes.contains(&code));
        let by_text = rule.texts.iter().any(|needle| text.contains(needle));
        if by_reason || by_exit || by_text {
            patterns.push(rule.pattern);
        }
    }
    if context.failed_steps.iter().any(|step| names_a_test(step)) {
        patterns.push(ErrorPattern::TestFailure);
    }
    patterns.sort();
    patterns.dedup();
    if patterns.is_empty() {
        patterns.push(ErrorPattern::Unknown);
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(reason: Option<&str>, exit: Option<i32>, log: &str) -> FailureContext {
        FailureContext {
            reason: reason.map(str::to_owned),
            exit_code: exit,
            log_excerpt: (!log.is_empty()).then(|| log.to_owned()),
            ..FailureContext::default()
        }
    }

    fn patterns(context: FailureContext) -> Vec<ErrorPattern> {
        classify(&context, &CiMetadata::default())
    }

    #[test]
    fn platform_reasons_are_classified() {
        use ErrorPattern::*;
        assert_eq!(patterns(context(Some("timed_out"), None, "")), [Timeout]);
        assert_eq!(
            patterns(context(Some("stuck_or_timeout_failure"), None, "")),
            [Timeout]
        );
        assert_eq!(
            patterns(context(Some("runner_system_failure"), None, "")),
            [Infrastructure]
        );
        assert_eq!(patterns(context(Some("ABORTED"), None, "")), [Cancelled]);
        assert_eq!(patterns(context(Some("UNSTABLE"), None, "")), [TestFailure]);
        assert_eq!(
            patterns(context(Some("script_failure"), None, "")),
            [Unknown]
        );
    }

    #[test]
    fn exit_codes_and_logs_are_classified() {
        use ErrorPattern::*;
        assert_eq!(patterns(context(None, Some(137), "")), [OutOfMemory]);
        assert_eq!(
            patterns(context(
                None,
                Some(1),
                "Error: connect ECONNREFUSED 127.0.0.1:5432"
            )),
            [ConnectionRefused]
        );
        assert_eq!(
            patterns(context(None, None, "net/http: TLS handshake timeout")),
            [Timeout, Network]
        );
        assert_eq!(
            patterns(context(
                None,
                None,
                "npm ERR! code E404\nnpm ERR! 404 Not Found"
            )),
            [Dependency]
        );
        assert_eq!(
            patterns(context(None, None, "error[E0308]: mismatched types")),
            [Compilation]
        );
        assert_eq!(
            patterns(context(None, None, "write /tmp/x: no space left on device")),
            [DiskFull]
        );
    }

    #[test]
    fn the_jenkins_fixtures_log_is_a_test_failure() {
        let log = "test retry::tests::jitter_stays_within_bounds ... FAILED\n\
                   assertion failed: delay <= Duration::from_millis(2200)\n\
                   test result: FAILED. 210 passed; 2 failed; 2 ignored";
        let mut context = context(Some("FAILURE"), None, log);
        context.failed_steps = vec!["retry.tests.jitter_stays_within_bounds".into()];
        assert_eq!(patterns(context), [ErrorPattern::TestFailure]);
    }

    #[test]
    fn failed_steps_named_like_tests_count_and_known_patterns_are_kept() {
        let mut context = context(Some("failed"), None, "");
        context.failed_steps = vec!["unit-tests".into()];
        context.error_patterns = vec!["connection_refused".into(), "flaky-dns".into()];
        assert_eq!(
            patterns(context),
            [ErrorPattern::ConnectionRefused, ErrorPattern::TestFailure]
        );
    }
}
