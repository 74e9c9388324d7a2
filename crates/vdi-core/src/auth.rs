//! Which key grants what. Keys are compared in constant time (for keys of equal
//! length; a length mismatch returns early, which reveals only the length).

use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The broker ("dispatcher"): holds `api_key`.
    Dispatcher,
    /// A desktop client: holds `cli_key`.
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No token at all: 401.
    Missing,
    /// A token that is no key of this gateway: 401.
    Wrong,
    /// The other role's valid key: 403.
    WrongRole,
}

/// Decides on the tokens a request presented (from `api_key`, `cli_key` and
/// `Authorization: Bearer` headers) for an endpoint that needs `role`.
pub fn authorize(role: Role, presented: &[&[u8]], api_key: &[u8], cli_key: &[u8]) -> Decision {
    let (mine, other) = match role {
        Role::Dispatcher => (api_key, cli_key),
        Role::Client => (cli_key, api_key),
    };
    if presented.is_empty() {
        return Decision::Missing;
    }
    // Evaluate every comparison so the time taken does not depend on which matched.
    let mut is_mine = subtle::Choice::from(0);
    let mut is_other = subtle::Choice::from(0);
    for token in presented {
        is_mine |= token.ct_eq(mine);
        is_other |= token.ct_eq(other);
    }
    if bool::from(is_mine) {
        Decision::Allow
    } else if bool::from(is_other) {
        Decision::WrongRole
    } else {
        Decision::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &[u8] = b"IVNGbmpzZGtmdWV3";
    const CLI: &[u8] = b"U0ZuanNka2Z1ZXch";

    #[test]
    fn matrix() {
        use Decision::*;
        use Role::*;
        let cases: &[(Role, &[&[u8]], Decision)] = &[
            (Dispatcher, &[API], Allow),
            (Dispatcher, &[CLI], WrongRole),
            (Dispatcher, &[b"IVNGbmpzZGtmdWV4"], Wrong),
            (Dispatcher, &[b""], Wrong),
            (Dispatcher, &[], Missing),
            (Client, &[CLI], Allow),
            (Client, &[API], WrongRole),
            (Client, &[b"nope"], Wrong),
            (Client, &[b"nope", CLI], Allow),
            (Dispatcher, &[CLI, API], Allow),
        ];
        for (role, presented, want) in cases {
            assert_eq!(
                authorize(*role, presented, API, CLI),
                *want,
                "{role:?} {presented:?}"
            );
        }
    }

    #[test]
    fn a_prefix_of_the_key_is_wrong() {
        assert_eq!(
            authorize(Role::Dispatcher, &[&API[..15]], API, CLI),
            Decision::Wrong
        );
    }
}
