//! `.proto` files every schema can import without an include path, like the well-known types:
//! the HTTP annotations (`google/api/annotations.proto`, `google/api/http.proto`, as vendored
//! in rpc-core) and the reflection service's own file.

use protox::file::{File, FileResolver};

/// The files, by the name they are imported as.
pub(crate) const FILES: &[(&str, &str)] = &[
    ("google/api/annotations.proto", include_str!("../../rpc-core/proto/google/api/annotations.proto")),
    ("google/api/http.proto", include_str!("../../rpc-core/proto/google/api/http.proto")),
    (
        "rpc/reflection/v1/reflection.proto",
        include_str!("../../rpc-core/proto/rpc/reflection/v1/reflection.proto"),
    ),
];

/// Resolves the [`FILES`] (after the include paths, which may shadow them).
#[derive(Debug, Default)]
pub(crate) struct BuiltinFiles;

impl FileResolver for BuiltinFiles {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match FILES.iter().find(|(file, _)| *file == name) {
            Some((name, source)) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}
