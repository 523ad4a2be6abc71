// Renders the chosen OpenAPI document. "Try it out" is pointed at the server that served the page: the
// documents name 127.0.0.1:8080, which is only right on the host itself.
(function () {
  var select = document.getElementById("spec");
  var wanted = new URLSearchParams(location.search).get("spec");
  if (wanted) select.value = wanted;

  function show(url) {
    fetch(url).then(function (r) { return r.json(); }).then(function (spec) {
      spec.servers = [{ url: location.origin }];
      window.ui = SwaggerUIBundle({ spec: spec, dom_id: "#ui", deepLinking: true, validatorUrl: null,
                                    persistAuthorization: true });
    });
  }

  select.addEventListener("change", function () {
    history.replaceState(null, "", "?spec=" + encodeURIComponent(select.value));
    show(select.value);
  });
  show(select.value);
})();
