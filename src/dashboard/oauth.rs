//! The page `/oauth/callback` answers when the provider sends the browser back
//! from its consent page. That navigation is cross-site, so the SameSite=Strict
//! session cookie is not sent with it: the page itself is public (the flow's
//! `state` authenticated the request) and moves on to the connection's page with a
//! same-site `<meta http-equiv=refresh>`, which carries the cookie. It shows the
//! connection's name or what went wrong, never a secret.

use maud::{html, Markup, DOCTYPE};

/// Where the page leads: the new connection, or back to the Connect form.
pub fn next_url(added: Result<&str, &str>) -> String {
    match added {
        Ok(name) => format!(
            "/connections/{}",
            url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
        ),
        Err(_) => "/connections/new".to_string(),
    }
}

/// The callback's page: `Ok(connection name)` once added, else `Err(why)`.
pub fn callback_page(added: Result<&str, &str>) -> Markup {
    let next = next_url(added);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if added.is_ok() {
                    meta http-equiv="refresh" content={ "1;url=" (next) };
                }
                title { "reposafe: Connect" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                main #oauth-result {
                    @match added {
                        Ok(name) => {
                            h1 { "Connected" }
                            p #oauth-ok { "The connection " strong { (name) } " was added." }
                            p { a #oauth-next href=(next) { "Open the connection" } }
                        }
                        Err(why) => {
                            h1 { "Connect failed" }
                            p #oauth-error .error { (why) }
                            p { a #oauth-next href=(next) { "Back to adding a connection" } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_and_leads_on() {
        let ok = callback_page(Ok("acme")).into_string();
        assert!(ok.contains("url=/connections/acme"), "{ok}");
        let bad = callback_page(Err("<b>denied</b>")).into_string();
        assert!(bad.contains("&lt;b&gt;denied"), "{bad}");
        assert!(!bad.contains("http-equiv"), "{bad}");
    }
}
