// Starts Swagger UI on /docs (a file, not an inline script: the Content-Security-Policy allows none).
var holder = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: holder.getAttribute("data-openapi-url"),
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]
});
