// H5File over the HDF5 C API: files, datasets, groups and attributes.
// All HDF5 calls of the project live here; errors become absl::Status naming file and object.
#include "data/hdf5.h"

#include <hdf5.h>
#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/check.h"

namespace st {

namespace {

// Turns off HDF5's automatic printing of its error stack (we report through absl::Status).
void SilenceHdf5Errors() {
  static const bool done = [] {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

// Closes an HDF5 identifier of any kind when it goes out of scope.
class Hid {
 public:
  explicit Hid(hid_t id = -1) : id_(id) {}
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  ~Hid() {
    if (id_ >= 0) H5Idec_ref(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  void reset(hid_t id) {
    if (id_ >= 0) H5Idec_ref(id_);
    id_ = id;
  }

 private:
  hid_t id_;
};

// Opens dataset `p` of `f` (HDF5 id `file`) into `dset`: NotFound when absent,
// InvalidArgument when `p` is a group.
absl::Status OpenDataset(const H5File& f, hid_t file, const std::string& p, Hid* dset) {
  if (!f.Exists(p)) {
    return absl::NotFoundError(absl::StrCat(f.path(), ": dataset '", p, "' not found"));
  }
  dset->reset(H5Dopen2(file, p.c_str(), H5P_DEFAULT));
  if (!dset->ok()) {
    H5Eclear2(H5E_DEFAULT);
    return absl::InvalidArgumentError(absl::StrCat(f.path(), ": '", p, "' is not a dataset"));
  }
  return absl::OkStatus();
}

// The most specific message on HDF5's error stack (for appending to our messages), cleared.
herr_t FirstErrorWalker(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (out->empty() && err != nullptr && err->desc != nullptr) *out = err->desc;
  return 0;
}
std::string Hdf5Detail() {
  std::string desc;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, FirstErrorWalker, &desc);
  H5Eclear2(H5E_DEFAULT);
  if (desc.empty()) return "";
  return absl::StrCat(" (HDF5: ", desc, ")");
}

hid_t MemType(H5Type t) {
  switch (t) {
    case H5Type::kF32:
      return H5T_NATIVE_FLOAT;
    case H5Type::kF64:
      return H5T_NATIVE_DOUBLE;
    case H5Type::kI32:
      return H5T_NATIVE_INT32;
    case H5Type::kI64:
      return H5T_NATIVE_INT64;
    case H5Type::kU8:
      return H5T_NATIVE_UINT8;
    case H5Type::kU16:
      return H5T_NATIVE_UINT16;
    case H5Type::kU32:
      return H5T_NATIVE_UINT32;
  }
  ST_CHECK(false) << "bad H5Type " << static_cast<int>(t);
  return -1;
}

// Storage types are fixed little-endian so files are identical on every machine.
hid_t FileType(H5Type t) {
  switch (t) {
    case H5Type::kF32:
      return H5T_IEEE_F32LE;
    case H5Type::kF64:
      return H5T_IEEE_F64LE;
    case H5Type::kI32:
      return H5T_STD_I32LE;
    case H5Type::kI64:
      return H5T_STD_I64LE;
    case H5Type::kU8:
      return H5T_STD_U8LE;
    case H5Type::kU16:
      return H5T_STD_U16LE;
    case H5Type::kU32:
      return H5T_STD_U32LE;
  }
  ST_CHECK(false) << "bad H5Type " << static_cast<int>(t);
  return -1;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Shape of a dataspace; false when it is neither simple nor scalar.
bool SpaceShape(hid_t space, std::vector<int64_t>* shape) {
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) return false;
  std::vector<hsize_t> dims(rank);
  if (rank > 0 && H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0) return false;
  shape->assign(dims.begin(), dims.end());
  return true;
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

size_t H5TypeSize(H5Type t) {
  switch (t) {
    case H5Type::kF32:
      return 4;
    case H5Type::kF64:
      return 8;
    case H5Type::kI32:
      return 4;
    case H5Type::kI64:
      return 8;
    case H5Type::kU8:
      return 1;
    case H5Type::kU16:
      return 2;
    case H5Type::kU32:
      return 4;
  }
  ST_CHECK(false) << "bad H5Type " << static_cast<int>(t);
  return 0;
}

int64_t H5DatasetInfo::num_elements() const { return NumElements(shape); }

absl::StatusOr<H5File> H5File::Create(const std::string& path) {
  SilenceHdf5Errors();
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) {
    return absl::InternalError(absl::StrCat(
        path,
        ": cannot create HDF5 file; check that the directory exists and is writable and "
        "that the file is not open elsewhere",
        Hdf5Detail()));
  }
  return H5File(id, path);
}

absl::StatusOr<H5File> H5File::Open(const std::string& path, bool writable) {
  SilenceHdf5Errors();
  if (!FileExists(path)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file; check the path"));
  }
  const htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not an HDF5 file (no HDF5 signature); expected a file written by this project"));
  }
  const hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) {
    return absl::InternalError(
        absl::StrCat(path, ": cannot open HDF5 file", writable ? " for writing" : "",
                     "; check permissions and that no other process is writing it", Hdf5Detail()));
  }
  return H5File(id, path);
}

H5File::H5File(H5File&& other) noexcept
    : id_(std::exchange(other.id_, -1)), path_(std::move(other.path_)) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = std::exchange(other.id_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

H5File::~H5File() {
  if (id_ >= 0) H5Fclose(id_);
}

absl::Status H5File::Close() {
  if (id_ < 0) return absl::OkStatus();
  const hid_t id = std::exchange(id_, -1);
  if (H5Fclose(id) < 0) {
    return absl::InternalError(
        absl::StrCat(path_, ": error while closing (data may not be on disk)", Hdf5Detail()));
  }
  return absl::OkStatus();
}

absl::Status H5File::WriteDataset(absl::string_view path, H5Type type,
                                  const std::vector<int64_t>& shape, const void* data) {
  const std::string p(path);
  if (id_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": file is closed"));
  std::vector<hsize_t> dims;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": dataset '", p, "': negative dimension ", d));
    }
    dims.push_back(static_cast<hsize_t>(d));
  }
  const int64_t n = NumElements(shape);
  if (n > 0 && data == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": dataset '", p, "': null data for ", n, " elements"));
  }
  // Replace an existing dataset of the same name (the old space is not reclaimed).
  if (Exists(p)) {
    if (H5Ldelete(id_, p.c_str(), H5P_DEFAULT) < 0) {
      return absl::InternalError(
          absl::StrCat(path_, ": cannot replace existing object '", p, "'", Hdf5Detail()));
    }
  }
  Hid space(shape.empty() ? H5Screate(H5S_SCALAR)
                          : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  if (!space.ok()) {
    return absl::InternalError(
        absl::StrCat(path_, ": dataset '", p, "': cannot create dataspace", Hdf5Detail()));
  }
  Hid lcpl(H5Pcreate(H5P_LINK_CREATE));
  if (!lcpl.ok() || H5Pset_create_intermediate_group(lcpl.get(), 1) < 0) {
    return absl::InternalError(absl::StrCat(path_, ": HDF5 property list error", Hdf5Detail()));
  }
  Hid dset(H5Dcreate2(id_, p.c_str(), FileType(type), space.get(), lcpl.get(), H5P_DEFAULT,
                      H5P_DEFAULT));
  if (!dset.ok()) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot create dataset '", p,
                     "'; is the path absolute and is no parent a dataset? (file opened writable?)",
                     Hdf5Detail()));
  }
  if (n > 0 && H5Dwrite(dset.get(), MemType(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot write dataset '", p, "'; is the disk full?", Hdf5Detail()));
  }
  return absl::OkStatus();
}

absl::Status H5File::WriteChunked1D(absl::string_view path, H5Type type, int64_t count,
                                    const void* data, int64_t chunk) {
  const std::string p(path);
  if (id_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": file is closed"));
  if (count < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": dataset '", p, "': negative length ", count));
  }
  if (count == 0) return WriteDataset(path, type, {0}, data);
  if (data == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": dataset '", p, "': null data for ", count, " elements"));
  }
  if (Exists(p) && H5Ldelete(id_, p.c_str(), H5P_DEFAULT) < 0) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot replace existing object '", p, "'", Hdf5Detail()));
  }
  const hsize_t dims[1] = {static_cast<hsize_t>(count)};
  const hsize_t cdims[1] = {static_cast<hsize_t>(std::max<int64_t>(1, std::min(chunk, count)))};
  Hid space(H5Screate_simple(1, dims, nullptr));
  Hid lcpl(H5Pcreate(H5P_LINK_CREATE));
  Hid dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (!space.ok() || !lcpl.ok() || !dcpl.ok() ||
      H5Pset_create_intermediate_group(lcpl.get(), 1) < 0 ||
      H5Pset_chunk(dcpl.get(), 1, cdims) < 0) {
    return absl::InternalError(absl::StrCat(path_, ": HDF5 property list error", Hdf5Detail()));
  }
  Hid dset(
      H5Dcreate2(id_, p.c_str(), FileType(type), space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT));
  if (!dset.ok()) {
    return absl::InternalError(absl::StrCat(path_, ": cannot create chunked dataset '", p,
                                            "' (file opened writable?)", Hdf5Detail()));
  }
  if (H5Dwrite(dset.get(), MemType(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot write dataset '", p, "'; is the disk full?", Hdf5Detail()));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> H5File::ChunkLength(absl::string_view path) const {
  const std::string p(path);
  Hid dset;
  ST_RETURN_IF_ERROR(OpenDataset(*this, id_, p, &dset));
  Hid dcpl(H5Dget_create_plist(dset.get()));
  if (!dcpl.ok()) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot read the layout of '", p, "'", Hdf5Detail()));
  }
  if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return 0;
  hsize_t cdims[1] = {0};
  if (H5Pget_chunk(dcpl.get(), 1, cdims) != 1) {
    H5Eclear2(H5E_DEFAULT);
    return absl::InvalidArgumentError(absl::StrCat(path_, ": dataset '", p, "' is not 1-D"));
  }
  return static_cast<int64_t>(cdims[0]);
}

absl::StatusOr<H5DatasetInfo> H5File::Info(absl::string_view path) const {
  const std::string p(path);
  Hid dset;
  ST_RETURN_IF_ERROR(OpenDataset(*this, id_, p, &dset));
  Hid ftype(H5Dget_type(dset.get()));
  Hid space(H5Dget_space(dset.get()));
  H5DatasetInfo info;
  if (!ftype.ok() || !space.ok() || !SpaceShape(space.get(), &info.shape)) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot read type/shape of dataset '", p, "'", Hdf5Detail()));
  }
  const H5T_class_t cls = H5Tget_class(ftype.get());
  const size_t size = H5Tget_size(ftype.get());
  bool known = true;
  if (cls == H5T_FLOAT && size == 4) {
    info.type = H5Type::kF32;
  } else if (cls == H5T_FLOAT && size == 8) {
    info.type = H5Type::kF64;
  } else if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(ftype.get()) == H5T_SGN_2;
    if (is_signed && size == 4) {
      info.type = H5Type::kI32;
    } else if (is_signed && size == 8) {
      info.type = H5Type::kI64;
    } else if (!is_signed && size == 1) {
      info.type = H5Type::kU8;
    } else if (!is_signed && size == 2) {
      info.type = H5Type::kU16;
    } else if (!is_signed && size == 4) {
      info.type = H5Type::kU32;
    } else {
      known = false;
    }
  } else {
    known = false;
  }
  if (!known) {
    return absl::UnimplementedError(absl::StrCat(
        path_, ": dataset '", p, "' has an element type this program does not handle (class ",
        static_cast<int>(cls), ", ", size, " bytes); use f32/f64/i32/i64/u8/u16/u32"));
  }
  return info;
}

absl::Status H5File::ReadDataset(absl::string_view path, H5Type type, void* out,
                                 size_t bytes) const {
  const std::string p(path);
  Hid dset;
  ST_RETURN_IF_ERROR(OpenDataset(*this, id_, p, &dset));
  Hid space(H5Dget_space(dset.get()));
  std::vector<int64_t> shape;
  if (!space.ok() || !SpaceShape(space.get(), &shape)) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot read shape of dataset '", p, "'", Hdf5Detail()));
  }
  const int64_t n = NumElements(shape);
  const size_t want = static_cast<size_t>(n) * H5TypeSize(type);
  if (bytes != want) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": dataset '", p, "' holds ", n,
                                                   " elements (", want, " bytes as requested), ",
                                                   "but the buffer has ", bytes, " bytes"));
  }
  if (n == 0) return absl::OkStatus();
  if (H5Dread(dset.get(), MemType(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    return absl::InternalError(absl::StrCat(path_, ": cannot read dataset '", p,
                                            "' (unconvertible type or corrupt file?)",
                                            Hdf5Detail()));
  }
  return absl::OkStatus();
}

absl::Status H5File::ReadSlab1D(absl::string_view path, H5Type type, int64_t offset, int64_t count,
                                void* out) const {
  const std::string p(path);
  Hid dset;
  ST_RETURN_IF_ERROR(OpenDataset(*this, id_, p, &dset));
  Hid fspace(H5Dget_space(dset.get()));
  std::vector<int64_t> shape;
  if (!fspace.ok() || !SpaceShape(fspace.get(), &shape)) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot read shape of dataset '", p, "'", Hdf5Detail()));
  }
  if (shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": dataset '", p, "' has rank ",
                                                   shape.size(), "; ReadSlab1D needs rank 1"));
  }
  if (offset < 0 || count < 0 || offset > shape[0] || count > shape[0] - offset) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": dataset '", p, "': elements [", offset,
                                              ", ", offset + count, ") are outside [0, ", shape[0],
                                              ")"));
  }
  if (count == 0) return absl::OkStatus();
  const hsize_t start[1] = {static_cast<hsize_t>(offset)};
  const hsize_t cnt[1] = {static_cast<hsize_t>(count)};
  Hid mspace(H5Screate_simple(1, cnt, nullptr));
  if (!mspace.ok() ||
      H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, cnt, nullptr) < 0 ||
      H5Dread(dset.get(), MemType(type), mspace.get(), fspace.get(), H5P_DEFAULT, out) < 0) {
    return absl::InternalError(absl::StrCat(path_, ": cannot read elements [", offset, ", ",
                                            offset + count, ") of dataset '", p, "'",
                                            Hdf5Detail()));
  }
  return absl::OkStatus();
}

bool H5File::Exists(absl::string_view path) const {
  if (id_ < 0) return false;
  // H5Lexists fails on a missing intermediate, so test the path one component at a time.
  std::string prefix = absl::StartsWith(path, "/") ? "" : ".";
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    absl::StrAppend(&prefix, "/", part);
    if (H5Lexists(id_, prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
  }
  if (prefix.empty() || prefix == ".") return true;  // the root group
  const htri_t resolves = H5Oexists_by_name(id_, prefix.c_str(), H5P_DEFAULT);
  if (resolves <= 0) H5Eclear2(H5E_DEFAULT);
  return resolves > 0;
}

absl::StatusOr<std::vector<std::string>> H5File::List(absl::string_view group) const {
  const std::string g(group.empty() ? "/" : group);
  if (!Exists(g)) return absl::NotFoundError(absl::StrCat(path_, ": group '", g, "' not found"));
  Hid gid(H5Gopen2(id_, g.c_str(), H5P_DEFAULT));
  if (!gid.ok()) {
    H5Eclear2(H5E_DEFAULT);
    return absl::InvalidArgumentError(absl::StrCat(path_, ": '", g, "' is not a group"));
  }
  H5G_info_t ginfo;
  if (H5Gget_info(gid.get(), &ginfo) < 0) {
    return absl::InternalError(absl::StrCat(path_, ": cannot list group '", g, "'", Hdf5Detail()));
  }
  std::vector<std::string> names;
  for (hsize_t i = 0; i < ginfo.nlinks; ++i) {
    const ssize_t len =
        H5Lget_name_by_idx(gid.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) {
      return absl::InternalError(
          absl::StrCat(path_, ": cannot list group '", g, "'", Hdf5Detail()));
    }
    std::string name(static_cast<size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(gid.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                       H5P_DEFAULT);
    name.resize(static_cast<size_t>(len));
    names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status H5File::CreateGroup(absl::string_view path) {
  const std::string p(path);
  if (Exists(p)) {
    Hid obj(H5Oopen(id_, p.c_str(), H5P_DEFAULT));
    if (obj.ok() && H5Iget_type(obj.get()) == H5I_GROUP) return absl::OkStatus();
    H5Eclear2(H5E_DEFAULT);
    return absl::AlreadyExistsError(absl::StrCat(path_, ": '", p, "' exists and is not a group"));
  }
  Hid lcpl(H5Pcreate(H5P_LINK_CREATE));
  if (!lcpl.ok() || H5Pset_create_intermediate_group(lcpl.get(), 1) < 0) {
    return absl::InternalError(absl::StrCat(path_, ": HDF5 property list error", Hdf5Detail()));
  }
  Hid gid(H5Gcreate2(id_, p.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!gid.ok()) {
    return absl::InternalError(absl::StrCat(path_, ": cannot create group '", p,
                                            "'; is a parent a dataset? (file opened writable?)",
                                            Hdf5Detail()));
  }
  return absl::OkStatus();
}

namespace {

// Writes a scalar attribute `name` on object `obj`, replacing an existing one.
absl::Status WriteScalarAttr(hid_t file, const std::string& file_path, absl::string_view obj,
                             absl::string_view name, hid_t file_type, hid_t mem_type,
                             const void* value) {
  const std::string o(obj), n(name);
  Hid oid(H5Oopen(file, o.c_str(), H5P_DEFAULT));
  if (!oid.ok()) {
    H5Eclear2(H5E_DEFAULT);
    return absl::NotFoundError(
        absl::StrCat(file_path, ": object '", o, "' not found (writing attribute '", n, "')"));
  }
  const htri_t exists = H5Aexists(oid.get(), n.c_str());
  if (exists > 0 && H5Adelete(oid.get(), n.c_str()) < 0) {
    return absl::InternalError(
        absl::StrCat(file_path, ": cannot replace attribute '", n, "' on '", o, "'", Hdf5Detail()));
  }
  Hid space(H5Screate(H5S_SCALAR));
  Hid attr(H5Acreate2(oid.get(), n.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!space.ok() || !attr.ok() || H5Awrite(attr.get(), mem_type, value) < 0) {
    return absl::InternalError(absl::StrCat(file_path, ": cannot write attribute '", n, "' on '", o,
                                            "' (file opened writable?)", Hdf5Detail()));
  }
  return absl::OkStatus();
}

// Opens attribute `name` of `obj` for reading, with clear errors.
absl::StatusOr<hid_t> OpenAttr(hid_t file, const std::string& file_path, absl::string_view obj,
                               absl::string_view name) {
  const std::string o(obj), n(name);
  Hid oid(H5Oopen(file, o.c_str(), H5P_DEFAULT));
  if (!oid.ok()) {
    H5Eclear2(H5E_DEFAULT);
    return absl::NotFoundError(
        absl::StrCat(file_path, ": object '", o, "' not found (reading attribute '", n, "')"));
  }
  if (H5Aexists(oid.get(), n.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return absl::NotFoundError(
        absl::StrCat(file_path, ": attribute '", n, "' not found on '", o, "'"));
  }
  const hid_t attr = H5Aopen(oid.get(), n.c_str(), H5P_DEFAULT);
  if (attr < 0) {
    return absl::InternalError(
        absl::StrCat(file_path, ": cannot open attribute '", n, "' on '", o, "'", Hdf5Detail()));
  }
  return attr;
}

// Reads a one-element numeric attribute converted to `mem_type`; `allowed` is a bitmask of
// accepted storage classes (1 = integer, 2 = float).
absl::Status ReadNumericAttr(hid_t file, const std::string& file_path, absl::string_view obj,
                             absl::string_view name, int allowed, const char* what, hid_t mem_type,
                             void* out) {
  absl::StatusOr<hid_t> a = OpenAttr(file, file_path, obj, name);
  if (!a.ok()) return a.status();
  Hid attr(*a);
  Hid ftype(H5Aget_type(attr.get()));
  Hid space(H5Aget_space(attr.get()));
  const H5T_class_t cls = ftype.ok() ? H5Tget_class(ftype.get()) : H5T_NO_CLASS;
  const bool class_ok =
      (cls == H5T_INTEGER && (allowed & 1)) || (cls == H5T_FLOAT && (allowed & 2));
  const hssize_t npoints = space.ok() ? H5Sget_simple_extent_npoints(space.get()) : -1;
  if (!class_ok || npoints != 1) {
    H5Eclear2(H5E_DEFAULT);
    return absl::InvalidArgumentError(
        absl::StrCat(file_path, ": attribute '", name, "' on '", obj, "' is not a single ", what));
  }
  if (H5Aread(attr.get(), mem_type, out) < 0) {
    return absl::InternalError(absl::StrCat(file_path, ": cannot read attribute '", name, "' on '",
                                            obj, "'", Hdf5Detail()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status H5File::WriteAttr(absl::string_view obj, absl::string_view name,
                               absl::string_view value) {
  // Variable-length UTF-8: h5py reads it back as str, h5ls prints it as a string.
  Hid type(H5Tcopy(H5T_C_S1));
  if (!type.ok() || H5Tset_size(type.get(), H5T_VARIABLE) < 0 ||
      H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0) {
    return absl::InternalError(absl::StrCat(path_, ": HDF5 string type error", Hdf5Detail()));
  }
  const std::string v(value);
  const char* ptr = v.c_str();
  return WriteScalarAttr(id_, path_, obj, name, type.get(), type.get(), &ptr);
}

absl::Status H5File::WriteAttr(absl::string_view obj, absl::string_view name, int64_t value) {
  return WriteScalarAttr(id_, path_, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

absl::Status H5File::WriteAttr(absl::string_view obj, absl::string_view name, double value) {
  return WriteScalarAttr(id_, path_, obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

absl::StatusOr<std::string> H5File::ReadStringAttr(absl::string_view obj,
                                                   absl::string_view name) const {
  absl::StatusOr<hid_t> a = OpenAttr(id_, path_, obj, name);
  if (!a.ok()) return a.status();
  Hid attr(*a);
  Hid ftype(H5Aget_type(attr.get()));
  Hid space(H5Aget_space(attr.get()));
  if (!ftype.ok() || H5Tget_class(ftype.get()) != H5T_STRING || !space.ok() ||
      H5Sget_simple_extent_npoints(space.get()) != 1) {
    H5Eclear2(H5E_DEFAULT);
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": attribute '", name, "' on '", obj, "' is not a single string"));
  }
  const htri_t is_vlen = H5Tis_variable_str(ftype.get());
  if (is_vlen > 0) {
    Hid mtype(H5Tcopy(H5T_C_S1));
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));
    char* buf = nullptr;
    if (H5Aread(attr.get(), mtype.get(), &buf) < 0) {
      return absl::InternalError(
          absl::StrCat(path_, ": cannot read attribute '", name, "' on '", obj, "'", Hdf5Detail()));
    }
    std::string value = buf != nullptr ? std::string(buf) : std::string();
    if (buf != nullptr) H5free_memory(buf);
    return value;
  }
  // Fixed-length string: read the raw bytes and drop the padding.
  const size_t size = H5Tget_size(ftype.get());
  std::string value(size, '\0');
  Hid mtype(H5Tcopy(ftype.get()));
  if (size > 0 && H5Aread(attr.get(), mtype.get(), value.data()) < 0) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot read attribute '", name, "' on '", obj, "'", Hdf5Detail()));
  }
  const size_t nul = value.find('\0');
  if (nul != std::string::npos) value.resize(nul);
  if (H5Tget_strpad(ftype.get()) == H5T_STR_SPACEPAD) {
    while (!value.empty() && value.back() == ' ') value.pop_back();
  }
  return value;
}

absl::StatusOr<int64_t> H5File::ReadIntAttr(absl::string_view obj, absl::string_view name) const {
  int64_t v = 0;
  ST_RETURN_IF_ERROR(ReadNumericAttr(id_, path_, obj, name, 1, "integer", H5T_NATIVE_INT64, &v));
  return v;
}

absl::StatusOr<double> H5File::ReadDoubleAttr(absl::string_view obj, absl::string_view name) const {
  double v = 0;
  ST_RETURN_IF_ERROR(
      ReadNumericAttr(id_, path_, obj, name, 1 | 2, "number", H5T_NATIVE_DOUBLE, &v));
  return v;
}

bool H5File::HasAttr(absl::string_view obj, absl::string_view name) const {
  if (!Exists(obj)) return false;
  const std::string o(obj), n(name);
  const htri_t r = H5Aexists_by_name(id_, o.c_str(), n.c_str(), H5P_DEFAULT);
  if (r < 0) H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

}  // namespace st
