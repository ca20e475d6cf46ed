//! Dashboard sessions: signing in at `/login` with the admin token creates a
//! random session id (256 bits, kept only in the daemon's memory, by its hash)
//! with its own CSRF token and an expiry; the browser holds the id in an
//! HttpOnly, SameSite=Strict cookie, never the admin token. `POST /logout` or the
//! expiry ends it; a daemon restart ends them all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie holding the session id.
pub const SESSION_COOKIE: &str = "reposafe_session";
/// How long a session lasts after signing in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// At most this many live sessions; signing in beyond it ends the oldest.
const MAX_SESSIONS: usize = 1000;

/// One signed-in browser.
#[derive(Clone)]
pub struct Session {
    /// BLAKE3 hash of the session id (the id itself is not kept).
    key: [u8; 32],
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    expires: Instant,
}

/// The live sessions.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    lifetime: Duration,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new(SESSION_LIFETIME)
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
    hex::encode(bytes)
}

fn key_of(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

impl Session {
    /// A short tag naming this session in the audit log (8 hex digits of the hash of
    /// its id: not enough to find the id).
    pub fn tag(&self) -> String {
        hex::encode(&self.key[..4])
    }
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            lifetime,
        }
    }

    /// How long a new session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the map cannot leave it inconsistent (plain inserts
        // and removes), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session: its id (for the cookie) and the session.
    pub fn create(&self) -> (String, Session) {
        let id = random_hex();
        let session = Session {
            key: key_of(&id),
            csrf: random_hex(),
            expires: Instant::now() + self.lifetime,
        };
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(session.key, session.clone());
        (id, session)
    }

    /// The live session with this id, if any.
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = key_of(id.trim());
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn end(&self, session: &Session) {
        self.lock().remove(&session.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_expire_and_end() {
        let sessions = Sessions::default();
        let (id, s) = sessions.create();
        let (id2, s2) = sessions.create();
        assert_eq!(id.len(), 64, "256-bit id");
        assert_ne!(id, id2);
        assert_ne!(s.csrf, s2.csrf);
        assert_ne!(id, s.csrf);
        assert_eq!(sessions.get(&id).map(|x| x.csrf), Some(s.csrf.clone()));
        assert!(sessions.get("0".repeat(64).as_str()).is_none());
        sessions.end(&s);
        assert!(sessions.get(&id).is_none());
        assert!(sessions.get(&id2).is_some());

        let short = Sessions::new(Duration::from_millis(30));
        let (id, _) = short.create();
        assert!(short.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(short.get(&id).is_none(), "expired");
    }

    #[test]
    fn the_number_of_sessions_is_capped() {
        let sessions = Sessions::default();
        let (first, _) = sessions.create();
        for _ in 0..MAX_SESSIONS {
            sessions.create();
        }
        assert!(sessions.lock().len() <= MAX_SESSIONS);
        assert!(sessions.get(&first).is_none(), "the oldest went first");
    }
}
