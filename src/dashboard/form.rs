//! A submitted HTML form (`application/x-www-form-urlencoded`), with the lookups
//! page handlers need: single values, repeated values (checkboxes), check boxes
//! and required fields whose absence is an error naming the field.

use super::PageError;
use secrecy::SecretString;

/// The fields of a form, in the order sent; a name may repeat.
#[derive(Debug, Default, Clone)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form {
            fields: url::form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The first value of `name`, untrimmed (secrets are taken as typed, minus line ends).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim_end_matches(['\r', '\n']))
            .filter(|v| !v.is_empty())
    }

    /// Every non-blank value of `name` (checkbox groups, multi-selects).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Whether a check box named `name` was checked.
    pub fn checked(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| !matches!(v, "0" | "false" | "off" | "no"))
    }

    /// The value of a field the form must have.
    pub fn required(&self, name: &str) -> Result<&str, PageError> {
        self.get(name).ok_or_else(|| PageError::Field {
            field: name.to_string(),
            message: "is required".into(),
        })
    }

    /// A secret field the form must have, taken as typed ([`Form::raw`]).
    pub fn secret(&self, name: &str) -> Result<SecretString, PageError> {
        self.raw(name)
            .map(|s| SecretString::from(s.to_string()))
            .ok_or_else(|| PageError::Field {
                field: name.to_string(),
                message: "is required".into(),
            })
    }

    /// The non-blank lines of a text area (one pattern per line).
    pub fn lines(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every field whose name starts with `prefix`, prefix removed (e.g. `setting:`).
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        self.fields
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(prefix)?;
                let v = v.trim();
                (!v.is_empty()).then(|| (name.to_string(), v.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let f = Form::parse(
            b"a=+x+&c=1&c=2&c=&box=on&t=p1%0D%0A%0D%0Ap2&setting%3Ahost=h&s=%20sec%20%0A",
        );
        assert_eq!(f.get("a"), Some("x"));
        assert_eq!(f.all("c"), ["1", "2"]);
        assert!(f.checked("box"));
        assert!(!f.checked("nobox"));
        assert_eq!(f.lines("t"), ["p1", "p2"]);
        assert_eq!(
            f.prefixed("setting:"),
            [("host".to_string(), "h".to_string())]
        );
        assert_eq!(f.raw("s"), Some(" sec "));
        let e = f.required("missing").unwrap_err().to_string();
        assert_eq!(e, "missing: is required");
    }
}
