# Decides whether the data plane is built with CUDA/NCCL support.
# TERN_CUDA=AUTO turns it on when the LibTorch found by find_package(Torch) was built with
# CUDA (Torch_DIR pointing at a CUDA LibTorch, e.g. the one inside the Python torch package).
set(TERN_HAVE_CUDA OFF)
if(TERN_CUDA STREQUAL "AUTO")
  if(TORCH_LIBRARIES MATCHES "torch_cuda" OR TARGET torch_cuda)
    set(TERN_HAVE_CUDA ON)
  endif()
elseif(TERN_CUDA)
  if(NOT (TORCH_LIBRARIES MATCHES "torch_cuda" OR TARGET torch_cuda))
    message(FATAL_ERROR "TERN_CUDA=ON but the LibTorch at ${Torch_DIR} has no CUDA; "
                        "set Torch_DIR to a CUDA LibTorch (see scripts/build-gpu.sh)")
  endif()
  set(TERN_HAVE_CUDA ON)
endif()
message(STATUS "tern: CUDA/NCCL support ${TERN_HAVE_CUDA}")
