//! Authentication: bearer tokens, JWT validation and roles. (To be written.)

/// Adds a bearer token to every call.
#[derive(Debug, Clone)]
pub struct BearerToken;

/// The validated claims of a JWT.
#[cfg(feature = "jwt")]
#[derive(Debug, Clone)]
pub struct Claims;

/// Validates JWT bearer tokens.
#[cfg(feature = "jwt")]
#[derive(Debug)]
pub struct JwtAuth;
