// Progressive enhancement for the avatar form: a preview before upload and an "Uploading..." state.
// Without JavaScript the plain multipart form works the same.
(function () {
  var form = document.getElementById("avatar-form");
  var input = document.getElementById("avatar");
  var button = document.getElementById("avatar-submit");
  if (!form || !input || !button) return;
  input.addEventListener("change", function () {
    var file = input.files && input.files[0];
    if (!file || !/^image\/(png|jpeg|gif|webp)$/.test(file.type)) return;
    var current = document.getElementById("avatar-image");
    var preview = document.createElement("img");
    preview.id = "avatar-image";
    preview.className = "avatar";
    preview.width = preview.height = 160;
    preview.alt = "Preview of your new photo";
    preview.src = URL.createObjectURL(file);
    current.replaceWith(preview);
  });
  form.addEventListener("submit", function () {
    button.disabled = true;
    button.textContent = "Uploading...";
  });
})();
