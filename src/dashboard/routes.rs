//! The dashboard's route table: every page module's routes joined, and the lookup
//! of a request's route with its path parameters.

use super::Route;
use hyper::Method;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Every dashboard route (one line per page module).
pub fn table() -> &'static [Route] {
    static TABLE: LazyLock<Vec<Route>> = LazyLock::new(|| {
        let mut all = Vec::new();
        all.extend(super::overview::routes());
        all.extend(super::connections::routes());
        all.extend(super::connect::routes());
        all.extend(super::plans::routes());
        all.extend(super::settings::routes());
        all.extend(super::audit::routes());
        all.extend(super::webhook::routes());
        all.extend(super::jobs::routes());
        all.extend(super::repositories::routes());
        all
    });
    &TABLE
}

/// The route for `method` and `path` and its path parameters; `Err(true)` when
/// the path exists with another method, `Err(false)` when no route has it.
pub fn find(
    method: &Method,
    path: &str,
) -> Result<(&'static Route, BTreeMap<&'static str, String>), bool> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut other_method = false;
    for r in table() {
        if let Some(params) = matches(r.pattern, &segs) {
            if r.method == *method {
                return Ok((r, params));
            }
            other_method = true;
        }
    }
    Err(other_method)
}

fn matches(pattern: &'static str, segs: &[String]) -> Option<BTreeMap<&'static str, String>> {
    let parts: Vec<&'static str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() != segs.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (p, s) in parts.iter().zip(segs) {
        match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => {
                params.insert(name, s.clone());
            }
            None if p == s => {}
            None => return None,
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_parameters() {
        let p = matches("/jobs/{id}", &["jobs".into(), "42".into()]).unwrap();
        assert_eq!(p["id"], "42");
        assert!(matches("/jobs/{id}", &["jobs".into()]).is_none());
        assert!(matches("/", &[]).is_some());
        assert!(find(&Method::GET, "/").is_ok());
        assert_eq!(find(&Method::DELETE, "/").err(), Some(true));
        assert_eq!(find(&Method::GET, "/nowhere/at/all").err(), Some(false));
    }
}
