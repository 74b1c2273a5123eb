//! Image folders: `PATH/<class name>/*.{png,jpg,jpeg,pgm,ppm}`, torchvision's `ImageFolder`
//! layout, read lazily (the [`Source`] lists the files; each image is decoded when asked for).
//!
//! - Classes are the sub-folders, sorted by name; their names are kept ([`Source::class_names`]).
//!   Names starting with `.` (`.ipynb_checkpoints`, `.git`) are skipped, folders and files alike.
//! - Images are the files with an image extension (any case) anywhere below a class folder
//!   (sub-folders included, at most 16 levels deep, symbolic links followed), in torchvision's
//!   order: folders sorted by path, files sorted by name within each. Other files are ignored.
//!   Anything that is not a regular file is skipped (a named pipe named `x.png` cannot block).
//! - Splits: a folder holding `train`, `val` (or `valid`, `validation`) and/or `test`, each laid
//!   out as above, is opened by [`open_split_folders`]; the classes are the union over the
//!   splits, so a label means the same class in every split (a class may be absent from a split).
//!
//! Errors name the folder: not a directory, no class folders (with a hint when images lie
//! directly in it), a class folder with no images, a single class. A file that fails to decode
//! is an error of [`Source::image`] naming the file — only when that example is asked for.
//!
//! ```
//! use consolidator::data::folder::ImageFolder;
//! use consolidator::data::Source;
//! let root = std::env::temp_dir().join(format!("consolidator-doc-folder-{}", std::process::id()));
//! for (class, name, pixel) in [("cat", "a.pgm", "255"), ("dog", "b.PGM", "0"), ("dog", "c.pgm", "9")] {
//!     std::fs::create_dir_all(root.join(class)).unwrap();
//!     let pgm = format!("P2 1 1 255 {pixel}\n");
//!     consolidator::io::write_atomic(&root.join(class).join(name), pgm.as_bytes()).unwrap();
//! }
//! let folder = ImageFolder::open(&root).unwrap();
//! assert_eq!(folder.class_names(), vec!["cat", "dog"]);
//! assert_eq!((folder.len(), folder.label(0), folder.label(2)), (3, 0, 1));
//! assert_eq!(folder.image(0).unwrap().data, vec![1.0]);
//! assert!(folder.describe(2).ends_with("c.pgm"));
//! std::fs::remove_dir_all(&root).unwrap();
//! ```

use super::decode::{has_image_extension, load_image, IMAGE_EXTENSIONS};
use super::image::Image;
use super::source::{out_of_range, Source};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Deepest folder nesting searched below a class folder.
pub const MAX_DEPTH: usize = 16;

/// The split folder names, and the split each stands for.
pub const SPLIT_FOLDERS: [(&str, &str); 5] =
    [("train", "train"), ("val", "val"), ("valid", "val"), ("validation", "val"), ("test", "test")];

/// A folder of class folders of images (see the module docs).
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Arc<Vec<String>>,
    files: Vec<(PathBuf, usize)>,
}

fn dir_error(path: &Path, msg: String) -> Error {
    Error::data(format!("image folder {}: {msg}", path.display()))
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// The visible entries of `dir`: `(name, path, is_dir, is_regular_file)`, sorted by name.
/// Symbolic links are followed; a dangling link is skipped.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool, bool)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        out.push((entry.file_name().to_string_lossy().into_owned(), path, meta.is_dir(), meta.is_file()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The class folders of `dir`, sorted by name; errors when there are none.
fn class_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(dir_error(dir, "not a directory".into()));
    }
    let all = entries(dir)?;
    let classes: Vec<(String, PathBuf)> = all.iter().filter(|e| e.2).map(|e| (e.0.clone(), e.1.clone())).collect();
    if classes.is_empty() {
        let loose = all.iter().filter(|e| e.3 && has_image_extension(&e.1)).count();
        let hint = if loose > 0 {
            format!("; it holds {loose} image file(s) directly: put them in one folder per class")
        } else {
            String::new()
        };
        return Err(dir_error(dir, format!("no class folders (expected PATH/<class name>/<image files>){hint}")));
    }
    Ok(classes)
}

/// Every image file below `dir`, in torchvision's order (folders by path, files by name).
fn images_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut folders: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = todo.pop() {
        let mut files = Vec::new();
        for (_, path, is_dir, is_file) in entries(&d)? {
            if is_dir && depth < MAX_DEPTH {
                todo.push((path, depth + 1));
            } else if is_file && has_image_extension(&path) {
                files.push(path);
            }
        }
        folders.push((d, files));
    }
    folders.sort_by(|a, b| a.0.as_os_str().to_string_lossy().cmp(&b.0.as_os_str().to_string_lossy()));
    Ok(folders.into_iter().flat_map(|(_, f)| f).collect())
}

impl ImageFolder {
    /// Lists `dir`'s class folders and their images (nothing is decoded). Errors: `dir` is not a
    /// directory, has no class folders, has a class folder without images, or has one class.
    pub fn open(dir: &Path) -> Result<ImageFolder> {
        let classes: Vec<String> = class_dirs(dir)?.into_iter().map(|(name, _)| name).collect();
        if classes.len() < 2 {
            return Err(dir_error(
                dir,
                format!("only one class folder (`{}`): a classifier needs at least 2 classes", escape(&classes[0])),
            ));
        }
        ImageFolder::with_classes(dir, Arc::new(classes))
    }

    /// Lists `dir`'s class folders with a given class list (a split of a dataset whose classes
    /// are the union over its splits): every class folder of `dir` must be in `classes`; classes
    /// without a folder here simply have no examples.
    pub fn with_classes(dir: &Path, classes: Arc<Vec<String>>) -> Result<ImageFolder> {
        let mut files = Vec::new();
        for (name, path) in class_dirs(dir)? {
            let label = classes
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| dir_error(dir, format!("class folder `{}` is not a known class", escape(&name))))?;
            let images = images_below(&path)?;
            if images.is_empty() {
                return Err(dir_error(
                    &path,
                    format!("this class folder holds no images (.{})", IMAGE_EXTENSIONS.join(", .")),
                ));
            }
            files.extend(images.into_iter().map(|p| (p, label)));
        }
        Ok(ImageFolder { root: dir.to_path_buf(), classes, files })
    }

    /// The folder of class folders.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every image file and its class, in example order.
    pub fn files(&self) -> &[(PathBuf, usize)] {
        &self.files
    }
}

fn escape(s: &str) -> String {
    crate::io::text::escape_text(s)
}

impl Source for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.as_ref().clone()
    }
    fn label(&self, i: usize) -> usize {
        self.files[i].1
    }
    fn image(&self, i: usize) -> Result<Image> {
        let (path, _) =
            self.files.get(i).ok_or_else(|| out_of_range(i, self.files.len(), &self.root.display().to_string()))?;
        load_image(path)
    }
    fn describe(&self, i: usize) -> String {
        self.files[i].0.display().to_string()
    }
}

/// If `dir` holds split folders (`train`, `val`/`valid`/`validation`, `test`), each a folder of
/// class folders, opens each as an [`ImageFolder`] over the union of their classes, keyed by
/// split name (`train`, `val`, `test`). `Ok(None)` when `dir` has no split folder. Other visible
/// folders beside the split folders are an error (a class folder in the wrong place).
pub fn open_split_folders(dir: &Path) -> Result<Option<BTreeMap<String, ImageFolder>>> {
    let subdirs: Vec<(String, PathBuf)> = entries(dir)?.into_iter().filter(|e| e.2).map(|e| (e.0, e.1)).collect();
    let split_of = |name: &str| SPLIT_FOLDERS.iter().find(|(f, _)| *f == name).map(|(_, s)| *s);
    let (splits, others): (Vec<_>, Vec<_>) = subdirs.into_iter().partition(|(name, _)| split_of(name).is_some());
    if splits.is_empty() {
        return Ok(None);
    }
    if !others.is_empty() {
        let names: Vec<String> = others.iter().map(|(n, _)| format!("`{}`", escape(n))).collect();
        return Err(dir_error(
            dir,
            format!(
                "it has split folders and other folders ({}): put every class folder inside train/, val/ or test/",
                names.join(", ")
            ),
        ));
    }
    let mut union: Vec<String> = Vec::new();
    let mut seen = BTreeMap::new();
    for (name, path) in &splits {
        let split = split_of(name).unwrap_or("train");
        if let Some(other) = seen.insert(split, name.clone()) {
            return Err(dir_error(dir, format!("both `{other}` and `{name}` are the {split} split")));
        }
        union.extend(class_dirs(path)?.into_iter().map(|(c, _)| c));
    }
    union.sort();
    union.dedup();
    if union.len() < 2 {
        return Err(dir_error(
            dir,
            format!("only one class (`{}`) over its splits: a classifier needs at least 2 classes", escape(&union[0])),
        ));
    }
    let classes = Arc::new(union);
    let mut out = BTreeMap::new();
    for (name, path) in splits {
        let split = split_of(&name).unwrap_or("train");
        out.insert(split.to_string(), ImageFolder::with_classes(&path, classes.clone())?);
    }
    Ok(Some(out))
}

/// Images to classify, without labels: files as given, and every image below a folder given
/// (in [`ImageFolder`]'s order). Each example's label is 0 and its description its path; images
/// are decoded when asked for, so a list of 100 000 files costs their paths.
///
/// ```
/// use consolidator::data::folder::ImageList;
/// use consolidator::data::Source;
/// let dir = std::env::temp_dir().join(format!("consolidator-doc-list-{}", std::process::id()));
/// std::fs::create_dir_all(dir.join("more")).unwrap();
/// std::fs::write(dir.join("a.pgm"), "P2 1 1 255 0\n").unwrap();
/// std::fs::write(dir.join("more/b.pgm"), "P2 1 1 255 255\n").unwrap();
/// let list = ImageList::new(&[dir.join("a.pgm"), dir.join("more")]).unwrap();
/// assert_eq!(list.len(), 2);
/// assert_eq!(list.image(1).unwrap().data, vec![1.0]);
/// assert!(ImageList::new(&[dir.join("none.png")]).is_err());
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct ImageList {
    files: Vec<PathBuf>,
}

impl ImageList {
    /// The images of `paths` (files, or folders searched below). A path that does not exist, a
    /// file without an image extension and a folder without images are errors naming the path.
    pub fn new(paths: &[PathBuf]) -> Result<ImageList> {
        let mut files = Vec::new();
        for p in paths {
            let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
            if meta.is_dir() {
                let found = images_below(p)?;
                if found.is_empty() {
                    return Err(dir_error(p, format!("no images (.{}) in this folder", IMAGE_EXTENSIONS.join(", ."))));
                }
                files.extend(found);
            } else if has_image_extension(p) {
                files.push(p.clone());
            } else {
                return Err(Error::data(format!(
                    "{}: not an image file (.{})",
                    escape(&p.display().to_string()),
                    IMAGE_EXTENSIONS.join(", .")
                )));
            }
        }
        Ok(ImageList { files })
    }

    /// The image files, in example order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Source for ImageList {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn num_classes(&self) -> usize {
        1
    }
    fn class_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn label(&self, _i: usize) -> usize {
        0
    }
    fn image(&self, i: usize) -> Result<Image> {
        load_image(self.files.get(i).ok_or_else(|| out_of_range(i, self.files.len(), "image list"))?)
    }
    fn describe(&self, i: usize) -> String {
        self.files[i].display().to_string()
    }
}
