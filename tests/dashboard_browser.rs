//! The dashboard in a real browser: headless Chromium (`reposafe_testkit::browser`)
//! against the real `reposafe serve`. Screenshots of each page go to the test
//! artifacts (`$REPOSAFE_ARTIFACTS`, else `<target>/test-artifacts/screenshots/`).

mod common;

use common::*;
use reposafe_testkit::Browser;
use std::path::PathBuf;

const SIGN_IN: &str = "#sign-in";
const SIGN_OUT: &str = "#sign-out";

/// A daemon on a fresh data dir, killed on drop.
struct Daemon {
    child: std::process::Child,
    url: String,
    token: String,
}

impl Daemon {
    fn start(rs: &Reposafe) -> Daemon {
        let child = start_daemon(rs);
        let (url, token) = wait_for_daemon(rs.data_dir());
        Daemon { child, url, token }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs in on the sign-in page the daemon shows at `/`.
fn sign_in(b: &mut Browser, d: &Daemon) {
    b.goto(&format!("{}/", d.url));
    b.type_into(r#"form[action="/login"] input[name=token]"#, &d.token);
    b.click_and_wait(SIGN_IN);
}

/// On a fresh daemon the browser is shown the sign-in page, where the page says
/// where the token is; a wrong token is refused with a message; the right one opens
/// the dashboard, which signs out again.
#[test]
fn sign_in_and_out() {
    let rs = Reposafe::new();
    let d = Daemon::start(&rs);
    let mut b = Browser::start("sign-in");

    b.goto(&format!("{}/", d.url));
    assert!(b.exists(r#"form[action="/login"] input[name=token]"#));
    assert!(
        b.text("body").contains("api-token"),
        "the sign-in page says where the token is"
    );
    b.screenshot("sign-in");

    b.type_into(
        r#"form[action="/login"] input[name=token]"#,
        "not-the-token",
    );
    b.click_and_wait(SIGN_IN);
    assert!(b.text("body").contains("wrong token"));
    assert!(b.exists(r#"form[action="/login"] input[name=token]"#));
    b.screenshot("sign-in-wrong-token");

    sign_in(&mut b, &d);
    assert!(b.exists(SIGN_OUT), "signed in: {}", b.text("body"));
    assert!(!b.exists(r#"form[action="/login"]"#));
    assert!(
        !b.text("body").contains(&d.token),
        "the token is not shown on the page"
    );
    b.screenshot("overview");

    b.click_and_wait(SIGN_OUT);
    assert!(b.exists(r#"form[action="/login"] input[name=token]"#));
    b.goto(&format!("{}/", d.url));
    assert!(
        b.exists(r#"form[action="/login"] input[name=token]"#),
        "signed out: the session is gone"
    );
    assert_eq!(b.js_errors(), Vec::<String>::new());
}
