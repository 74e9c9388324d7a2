// A file, not an inline script: the CSP allows scripts from the app only.
import init from "./vdi-console-ui.js";
init();
