//! [`AnyMessage`]: a call's message as an interceptor sees it, whatever its type.

use std::any::Any;
use std::fmt::Debug;

/// A request or response message seen by an interceptor that does not know its type (an
/// interceptor serves every method): it prints with `{:?}` (audit logs), and downcasts to
/// the message type the interceptor expects (validation, redaction).
///
/// Every message of a generated service is one: any `'static` type that is `Debug`,
/// `Send` and `Sync`, as prost messages are.
///
/// ```
/// use rpc_core::interceptor::AnyMessage;
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct Login {
///     #[prost(string, tag = "1")]
///     pub user: String,
///     #[prost(string, tag = "2")]
///     pub password: String,
/// }
///
/// let mut login = Login { user: "ada".into(), password: "secret".into() };
/// let message: &mut dyn AnyMessage = &mut login;
/// assert!(message.is::<Login>());
/// if let Some(login) = message.downcast_mut::<Login>() {
///     login.password = "<redacted>".into();
/// }
/// assert!(format!("{message:?}").contains("<redacted>"));
/// ```
pub trait AnyMessage: Any + Debug + Send + Sync {}

impl<T: Any + Debug + Send + Sync> AnyMessage for T {}

impl dyn AnyMessage {
    /// Whether the message is a `T`.
    pub fn is<T: Any>(&self) -> bool {
        (self as &dyn Any).is::<T>()
    }

    /// The message as a `T`, if it is one.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref()
    }

    /// The message as a `T`, to change, if it is one.
    pub fn downcast_mut<T: Any>(&mut self) -> Option<&mut T> {
        (self as &mut dyn Any).downcast_mut()
    }
}
