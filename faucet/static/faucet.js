// The page works without this script; it adds the "Add network to MetaMask" button
// (EIP-3085 wallet_addEthereumChain) and stops a double click from sending two claims.
"use strict";

function setUpAddNetwork() {
  const button = document.getElementById("add-network");
  const status = document.getElementById("wallet-status");
  if (!button) {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", async () => {
    const params = JSON.parse(button.dataset.network);
    if (!window.ethereum || typeof window.ethereum.request !== "function") {
      status.textContent =
        "No wallet found in this browser: install MetaMask, or add the network by hand.";
      return;
    }
    status.textContent = "Confirm in your wallet...";
    try {
      await window.ethereum.request({ method: "wallet_addEthereumChain", params: [params] });
      status.textContent = `${params.chainName} is in your wallet.`;
    } catch (error) {
      const reason = error && error.message ? error.message : String(error);
      status.textContent = `The wallet did not add the network: ${reason}`;
    }
  });
}

function setUpClaimForm() {
  const form = document.getElementById("claim-form");
  const button = document.getElementById("claim-button");
  if (!form || !button) {
    return;
  }
  form.addEventListener("submit", () => {
    // After the submission has started, so the form still posts normally.
    window.setTimeout(() => {
      button.disabled = true;
      button.textContent = "Sending...";
    }, 0);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpAddNetwork();
  setUpClaimForm();
});
